package symcrc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/csource"
)

// indexFormat is the version of the index layout and of the scan that
// fills it; it is part of the cache key, so a better scan never reads an
// older index.
const indexFormat = 2

// Index records which source files of a kernel tree export which symbols,
// as found by a lexical scan of every .c and .S file (with the export
// macros of the headers and of the file itself expanded). It is built once
// per tree and cached.
type Index struct {
	Format int    `json:"format"`
	Key    string `json:"key"`
	// Exports maps a symbol to the files (slash-separated, relative to
	// the tree) whose text exports it, sorted.
	Exports map[string][]string `json:"exports"`
	// Patterns are regexps of names exported through token-pasting macros
	// the scan could not expand, with their file: used only for symbols
	// Exports does not have.
	Patterns []Pattern `json:"patterns,omitempty"`
	// IncludedBy maps a .c file to the .c files that #include it: an
	// export in the included file is built as part of those.
	IncludedBy map[string][]string `json:"included_by,omitempty"`
	// Files is the number of files scanned.
	Files int `json:"files"`

	once     sync.Once
	compiled []*regexp.Regexp
}

// Pattern is a token-pasted export: names matching Regexp may be exported
// by File.
type Pattern struct {
	Regexp string `json:"regexp"`
	File   string `json:"file"`
}

// IndexOptions control where an index is cached and how it is keyed.
type IndexOptions struct {
	// CacheDir holds cached indexes (index-<key>.json); "" disables the
	// cache.
	CacheDir string
	// SourceID, when set, identifies the tree's content (a tarball's
	// sha256, a commit) and keys the cache; otherwise the key is a digest
	// of every scanned file's path, size and modification time, which
	// takes a walk of the tree.
	SourceID string
	// Skip lists directories (absolute) not to scan, e.g. an object tree
	// inside the source tree.
	Skip []string
	// Jobs is the number of files read in parallel (default: all cores).
	Jobs int
}

// skipTop are top-level directories without kernel exports.
var skipTop = map[string]bool{
	"Documentation": true, "tools": true, "samples": true, "scripts": true,
	"usr": true, "LICENSES": true, "rust": true,
}

// OpenIndex returns the export index of the source tree src: from the
// cache when it holds one with the same key, else scanned (and cached).
// cached reports a cache hit.
func OpenIndex(ctx context.Context, src string, o IndexOptions) (ix *Index, cached bool, err error) {
	var files []sourceFile
	key := ""
	if o.SourceID != "" {
		key = indexKey("id:" + o.SourceID)
	} else {
		if files, err = walkTree(src, o.Skip); err != nil {
			return nil, false, err
		}
		key = indexKey("tree:" + fingerprint(files))
	}
	cacheFile := ""
	if o.CacheDir != "" {
		cacheFile = filepath.Join(o.CacheDir, "index-"+key+".json")
		if ix, err := readIndex(cacheFile, key); err == nil {
			return ix, true, nil
		}
	}
	if files == nil {
		if files, err = walkTree(src, o.Skip); err != nil {
			return nil, false, err
		}
	}
	ix, err = scanTree(ctx, src, files, o.Jobs)
	if err != nil {
		return nil, false, err
	}
	ix.Key = key
	if cacheFile != "" {
		if err := writeIndex(cacheFile, ix); err != nil {
			return nil, false, err
		}
	}
	return ix, false, nil
}

func indexKey(id string) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("symcrc index %d\n%s", indexFormat, id)))
	return hex.EncodeToString(h[:])
}

// sourceFile is a .c, .S or .h file of the tree.
type sourceFile struct {
	rel   string // slash-separated, relative to the tree
	size  int64
	mtime int64
}

// walkTree lists the tree's .c, .S and .h files (in lexical order).
func walkTree(src string, skip []string) ([]sourceFile, error) {
	if st, err := os.Stat(filepath.Join(src, "Makefile")); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("symcrc: %s is not a kernel source tree (no Makefile)", src)
	}
	skipAbs := map[string]bool{}
	for _, s := range skip {
		if a, err := filepath.Abs(s); err == nil {
			skipAbs[a] = true
		}
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return nil, fmt.Errorf("symcrc: %w", err)
	}
	var files []sourceFile
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(strings.TrimPrefix(p, abs), string(filepath.Separator)))
		if d.IsDir() {
			if p != abs && (strings.HasPrefix(d.Name(), ".") || skipAbs[p] || (!strings.Contains(rel, "/") && skipTop[rel])) {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(rel); (ext != ".c" && ext != ".S" && ext != ".h") || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, sourceFile{rel: rel, size: info.Size(), mtime: info.ModTime().UnixNano()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("symcrc: scanning %s: %w", src, err)
	}
	return files, nil
}

// fingerprint digests the file list with sizes and modification times.
func fingerprint(files []sourceFile) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\t%d\t%d\n", f.rel, f.size, f.mtime)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// scanTree builds the index: the headers' export macros first, then every
// .c and .S file with them.
func scanTree(ctx context.Context, src string, files []sourceFile, jobs int) (*Index, error) {
	var headers, sources []string
	for _, f := range files {
		if strings.HasSuffix(f.rel, ".h") {
			headers = append(headers, f.rel)
		} else {
			sources = append(sources, f.rel)
		}
	}
	global, hcalls, err := scanHeaders(ctx, src, headers, jobs)
	if err != nil {
		return nil, err
	}
	hexports := map[string][]string{}
	for h, calls := range hcalls {
		if names := headerExports(calls, global); len(names) > 0 {
			hexports[h] = names
		}
	}
	var needles [][]byte
	for n := range global {
		if !exportLike(n) {
			needles = append(needles, []byte(n))
		}
	}
	ix := &Index{Format: indexFormat, Exports: map[string][]string{}, IncludedBy: map[string][]string{}, Files: len(files)}
	var mu sync.Mutex
	err = csource.ReadFiles(ctx, src, sources, jobs, func(rel string, data []byte) {
		fs := scanSource(rel, data, global, needles)
		mu.Lock()
		defer mu.Unlock()
		ix.add(rel, fs, hexports)
	})
	if err != nil {
		return nil, fmt.Errorf("symcrc: %w", err)
	}
	ix.sort()
	return ix, nil
}

// scanHeaders collects the export macros of all headers (global) and
// each header's own export calls.
func scanHeaders(ctx context.Context, src string, headers []string, jobs int) (rules, map[string][]macroCall, error) {
	global, calls := rules{}, map[string][]macroCall{}
	var mu sync.Mutex
	err := csource.ReadFiles(ctx, src, headers, jobs, func(rel string, data []byte) {
		hs := scanHeader(data)
		if hs.rules == nil && hs.calls == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for n, defs := range hs.rules {
			global[n] = append(global[n], defs...)
		}
		if hs.calls != nil {
			calls[rel] = hs.calls
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("symcrc: %w", err)
	}
	return global, calls, nil
}

// add records one file's scan; the exports of the headers it includes
// with quotes (hexports) are its own.
func (ix *Index) add(rel string, fs fileScan, hexports map[string][]string) {
	names := fs.exports
	for _, inc := range fs.includes {
		if strings.HasSuffix(inc, ".c") {
			ix.IncludedBy[inc] = append(ix.IncludedBy[inc], rel)
		}
		names = append(names, hexports[inc]...)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			ix.Exports[n] = append(ix.Exports[n], rel)
		}
	}
	for _, p := range fs.patterns {
		ix.Patterns = append(ix.Patterns, Pattern{Regexp: p, File: rel})
	}
}

// sort puts every list in a deterministic order (the scan is parallel).
func (ix *Index) sort() {
	for _, m := range []map[string][]string{ix.Exports, ix.IncludedBy} {
		for k := range m {
			sort.Strings(m[k])
		}
	}
	sort.Slice(ix.Patterns, func(i, j int) bool {
		a, b := ix.Patterns[i], ix.Patterns[j]
		return a.File < b.File || a.File == b.File && a.Regexp < b.Regexp
	})
}

func readIndex(path, key string) (*Index, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ix Index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("symcrc: index cache %s: %w", path, err)
	}
	if ix.Format != indexFormat || ix.Key != key || ix.Exports == nil {
		return nil, errors.New("symcrc: index cache entry of another format or key")
	}
	return &ix, nil
}

func writeIndex(path string, ix *Index) error {
	b, err := json.Marshal(ix)
	if err != nil {
		return fmt.Errorf("symcrc: index: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("symcrc: index cache: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("symcrc: index cache: %w", err)
	}
	return nil
}

// Locate returns the files that may export sym for the architecture
// whose source directory is arch/<srcarch>: the files of Exports (files
// of other architectures left out), with the .c files that #include them;
// when there are none, the files of matching Patterns.
func (ix *Index) Locate(sym, srcarch string) []string {
	ok := func(f string) bool {
		return !strings.HasPrefix(f, "arch/") || strings.HasPrefix(f, "arch/"+srcarch+"/")
	}
	seen := map[string]bool{}
	var out []string
	var add func(f string, depth int)
	add = func(f string, depth int) {
		if seen[f] || !ok(f) || depth > 4 {
			return
		}
		seen[f] = true
		out = append(out, f)
		for _, by := range ix.IncludedBy[f] {
			add(by, depth+1)
		}
	}
	for _, f := range ix.Exports[sym] {
		add(f, 0)
	}
	if len(out) == 0 {
		for i, p := range ix.Patterns {
			if re := ix.pattern(i); re != nil && re.MatchString(sym) {
				add(p.File, 0)
			}
		}
	}
	sort.Strings(out)
	return out
}

// pattern returns the compiled regexp of Patterns[i] (nil if invalid).
func (ix *Index) pattern(i int) *regexp.Regexp {
	ix.once.Do(func() {
		ix.compiled = make([]*regexp.Regexp, len(ix.Patterns))
		for j, p := range ix.Patterns {
			ix.compiled[j], _ = regexp.Compile(p.Regexp)
		}
	})
	return ix.compiled[i]
}
