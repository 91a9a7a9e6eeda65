package intree

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/wsl-modules/wsl-modules-action/internal/csource"
)

// hit is one reference to a wanted CONFIG_ name in a code file.
type hit struct {
	file  string
	line  int
	token string // CONFIG_X or CONFIG_X_MODULE
}

// include is one #include of a code file.
type include struct {
	from, target string // target as written, without quotes or brackets
	quoted       bool
}

// codeScan is what scanning the code files found.
type codeScan struct {
	hits     []hit
	includes []include
}

// scanCode reads every code file and returns the references to the
// wanted names (comments ignored) and the #include lines whose target's
// base name is in bases.
func (t *tree) scanCode(ctx context.Context, want map[string]bool, bases map[string]bool, jobs int) (*codeScan, error) {
	var mu sync.Mutex
	out := &codeScan{}
	err := csource.ReadFiles(ctx, t.src, t.codeFiles, jobs, func(rel string, data []byte) {
		hs, incs := scanCodeFile(rel, data, want, bases)
		if len(hs) > 0 || len(incs) > 0 {
			mu.Lock()
			out.hits = append(out.hits, hs...)
			out.includes = append(out.includes, incs...)
			mu.Unlock()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("intree: %w", err)
	}
	sort.Slice(out.hits, func(i, j int) bool {
		a, b := out.hits[i], out.hits[j]
		return a.file < b.file || a.file == b.file && (a.line < b.line || a.line == b.line && a.token < b.token)
	})
	return out, nil
}

// scanCodeFile finds the wanted CONFIG_ identifiers of one file outside
// comments, and its includes of files named in bases. Most files have
// neither: the comments are stripped only from a file that holds a
// wanted name, and only lines that hold "include" are parsed.
func scanCodeFile(rel string, data []byte, want, bases map[string]bool) ([]hit, []include) {
	var hits []hit
	if containsWanted(data, want) {
		hits = configHits(rel, csource.StripComments(data), want)
	}
	var incs []include
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte("include"))
		if i < 0 {
			break
		}
		start := bytes.LastIndexByte(data[:off+i], '\n') + 1
		end := bytes.IndexByte(data[off+i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += off + i
		}
		if inc, ok := parseInclude(data[start:end]); ok && bases[path.Base(inc.target)] {
			inc.from = rel
			incs = append(incs, inc)
		}
		off = end
	}
	return hits, incs
}

// containsWanted reports whether data holds any wanted name, comments
// included (a quick test before the file's comments are stripped).
func containsWanted(data []byte, want map[string]bool) bool {
	found := false
	csource.Idents(data, "CONFIG_", func(i, j int) bool {
		found = want[string(data[i:j])]
		return !found
	})
	return found
}

// configHits lists the wanted CONFIG_ identifiers of text (comments
// already blanked), with their lines.
func configHits(rel string, text []byte, want map[string]bool) []hit {
	var hits []hit
	line, last := 1, 0
	csource.Idents(text, "CONFIG_", func(i, j int) bool {
		if want[string(text[i:j])] {
			line += bytes.Count(text[last:i], []byte("\n"))
			last = i
			hits = append(hits, hit{file: rel, line: line, token: string(text[i:j])})
		}
		return true
	})
	return hits
}

// parseInclude parses a #include line.
func parseInclude(l []byte) (include, bool) {
	s := strings.TrimSpace(string(l))
	if !strings.HasPrefix(s, "#") {
		return include{}, false
	}
	s = strings.TrimSpace(s[1:])
	if !strings.HasPrefix(s, "include") {
		return include{}, false
	}
	s = strings.TrimSpace(s[len("include"):])
	if len(s) < 3 {
		return include{}, false
	}
	closer := map[byte]byte{'"': '"', '<': '>'}[s[0]]
	if closer == 0 {
		return include{}, false
	}
	end := strings.IndexByte(s[1:], closer)
	if end <= 0 {
		return include{}, false
	}
	return include{target: s[1 : 1+end], quoted: s[0] == '"'}, true
}
