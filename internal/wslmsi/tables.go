package wslmsi

import (
	"context"
	"encoding/binary"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// table is an MSI table as msiinfo exports it (IDT text).
type table struct {
	name string
	cols []string
	rows []map[string]string
}

// listTables returns the names of the MSI's tables. It fails for a file
// that is not a Windows Installer database.
func (t *tools) listTables(ctx context.Context, msi string) (map[string]bool, error) {
	out, err := t.output(ctx, t.msiinfo, "tables", msi)
	if err != nil {
		return nil, fmt.Errorf("%s is not a readable Windows Installer database (truncated or damaged?): %w", msi, err)
	}
	names := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			names[l] = true
		}
	}
	return names, nil
}

// export reads one table.
func (t *tools) export(ctx context.Context, msi, name string) (*table, error) {
	out, err := t.output(ctx, t.msiinfo, "export", msi, name)
	if err != nil {
		return nil, fmt.Errorf("%s: reading table %s: %w", msi, name, err)
	}
	tb, err := parseIDT(name, out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", msi, err)
	}
	return tb, nil
}

// parseIDT parses msiinfo's export: column names, column types and the
// table's key line, then one row per CRLF-terminated line with
// tab-separated fields. msiinfo does not escape tabs or line breaks in
// values, so a row with a line break or the wrong field count is refused.
func parseIDT(name string, data []byte) (*table, error) {
	lines := strings.Split(string(data), "\r\n")
	if len(lines) < 3 {
		return nil, fmt.Errorf("table %s: export of %d lines, want a header of 3", name, len(lines))
	}
	tb := &table{name: name, cols: strings.Split(lines[0], "\t")}
	if !strings.HasPrefix(lines[2], name+"\t") && lines[2] != name {
		return nil, fmt.Errorf("table %s: export names table %q", name, strings.SplitN(lines[2], "\t", 2)[0])
	}
	for i, l := range lines[3:] {
		if l == "" && i == len(lines)-4 {
			break // after the last CRLF
		}
		f := strings.Split(l, "\t")
		if strings.ContainsAny(l, "\r\n") {
			return nil, fmt.Errorf("table %s: row %d holds a line break in a value (%q)", name, i+1, l)
		}
		if len(f) != len(tb.cols) {
			return nil, fmt.Errorf("table %s: row %d has %d fields for %d columns (a value holding a tab?)", name, i+1, len(f), len(tb.cols))
		}
		row := make(map[string]string, len(f))
		for j, c := range tb.cols {
			row[c] = f[j]
		}
		tb.rows = append(tb.rows, row)
	}
	return tb, nil
}

// require checks that the table has the columns.
func (tb *table) require(cols ...string) error {
	have := map[string]bool{}
	for _, c := range tb.cols {
		have[c] = true
	}
	for _, c := range cols {
		if !have[c] {
			return fmt.Errorf("table %s has no column %s", tb.name, c)
		}
	}
	return nil
}

// msiFile is a File row with its resolved install path.
type msiFile struct {
	key, name string
	path      []string // e.g. ProgramFiles64Folder, WSL, tools, kernel
	size      int64
	seq       int
	md5       []byte // from MsiFileHash; nil without
}

// pathString joins the install path with backslashes, as Windows shows it.
func (f msiFile) pathString() string { return strings.Join(f.path, `\`) }

// medium is a Media row.
type medium struct {
	lastSeq int
	cabinet string
}

// layout is what the extraction needs from an MSI.
type layout struct {
	files          []msiFile
	media          []medium // by LastSequence
	productVersion string
}

// readLayout reads and checks the File, Component, Directory, Media,
// MsiFileHash and Property tables: every name is checked (validName) and
// every file's install path is resolved.
func (t *tools) readLayout(ctx context.Context, msi string) (*layout, error) {
	have, err := t.listTables(ctx, msi)
	if err != nil {
		return nil, err
	}
	tabs := map[string]*table{}
	for _, n := range []string{"File", "Component", "Directory", "Media", "MsiFileHash", "Property"} {
		if !have[n] {
			if n == "MsiFileHash" || n == "Property" {
				continue
			}
			return nil, fmt.Errorf("%s is not a WSL installer: it has no %s table", msi, n)
		}
		if tabs[n], err = t.export(ctx, msi, n); err != nil {
			return nil, err
		}
	}
	dirs, err := dirPaths(tabs["Directory"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", msi, err)
	}
	lay := &layout{}
	if lay.files, err = resolveFiles(tabs["File"], tabs["Component"], dirs, tabs["MsiFileHash"]); err != nil {
		return nil, fmt.Errorf("%s: %w", msi, err)
	}
	if lay.media, err = readMedia(tabs["Media"]); err != nil {
		return nil, fmt.Errorf("%s: %w", msi, err)
	}
	if p := tabs["Property"]; p != nil {
		for _, r := range p.rows {
			if r["Property"] == "ProductVersion" {
				lay.productVersion = r["Value"]
			}
		}
	}
	return lay, nil
}

var identifierRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// validName checks one file or directory name from the MSI: not empty,
// not . or .., no path separator, drive colon, wildcard, other character
// Windows forbids, or control character.
func validName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty name")
	case s == "." || s == "..":
		return fmt.Errorf("name %q", s)
	case len(s) > 255:
		return fmt.Errorf("name of %d bytes", len(s))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`/\:*?"<>|`, r) {
			return fmt.Errorf("name %q holds %q", s, r)
		}
	}
	return nil
}

// longName returns the long form of a "short|long" name, checking both.
func longName(s string) (string, error) {
	short, long, ok := strings.Cut(s, "|")
	if err := validName(short); err != nil {
		return "", err
	}
	if !ok {
		return short, nil
	}
	if err := validName(long); err != nil {
		return "", err
	}
	return long, nil
}

// dirName returns the target directory name of a DefaultDir value
// ("target[:source]", each "short|long" or "."), "" for ".".
func dirName(defaultDir string) (string, error) {
	target, source, hasSource := strings.Cut(defaultDir, ":")
	names := []string{target}
	if hasSource {
		names = append(names, source)
	}
	out := ""
	for i, n := range names {
		if n == "." {
			continue
		}
		long, err := longName(n)
		if err != nil {
			return "", err
		}
		if i == 0 {
			out = long
		}
	}
	return out, nil
}

// dirPaths resolves every directory's install path: below the root
// (TARGETDIR, a row without parent), a directory whose parent is the root
// is named by its id (a standard folder such as ProgramFiles64Folder, set
// by Windows Installer); the others add their DefaultDir name ("."
// adds none).
func dirPaths(dirs *table) (map[string][]string, error) {
	if err := dirs.require("Directory", "Directory_Parent", "DefaultDir"); err != nil {
		return nil, err
	}
	parent, name := map[string]string{}, map[string]string{}
	for _, r := range dirs.rows {
		id := r["Directory"]
		if !identifierRE.MatchString(id) {
			return nil, fmt.Errorf("unsafe name in the Directory table: id %q", id)
		}
		n, err := dirName(r["DefaultDir"])
		if err != nil {
			return nil, fmt.Errorf("unsafe name in the Directory table, row %s: DefaultDir %q: %v", id, r["DefaultDir"], err)
		}
		parent[id], name[id] = r["Directory_Parent"], n
	}
	out := map[string][]string{}
	var walk func(id string, depth int) ([]string, error)
	walk = func(id string, depth int) ([]string, error) {
		if p, ok := out[id]; ok {
			return p, nil
		}
		p, ok := parent[id]
		switch {
		case !ok:
			return nil, fmt.Errorf("Directory table: directory %q is referenced but not defined", id)
		case depth > 64:
			return nil, fmt.Errorf("Directory table: directory %q is part of a parent cycle", id)
		case p == "" || p == id:
			out[id] = []string{} // the root
			return out[id], nil
		}
		pp, err := walk(p, depth+1)
		if err != nil {
			return nil, err
		}
		seg := name[id]
		if parent[p] == "" || parent[p] == p {
			seg = id
		}
		path := append(append([]string(nil), pp...), seg)
		if seg == "" {
			path = pp
		}
		out[id] = path
		return path, nil
	}
	for id := range parent {
		if _, err := walk(id, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// resolveFiles checks every File row and resolves its path through its
// component's directory.
func resolveFiles(files, comps *table, dirs map[string][]string, hashes *table) ([]msiFile, error) {
	if err := files.require("File", "Component_", "FileName", "FileSize", "Sequence"); err != nil {
		return nil, err
	}
	if err := comps.require("Component", "Directory_"); err != nil {
		return nil, err
	}
	compDir := map[string]string{}
	for _, r := range comps.rows {
		compDir[r["Component"]] = r["Directory_"]
	}
	md5s, err := fileHashes(hashes)
	if err != nil {
		return nil, err
	}
	var out []msiFile
	for _, r := range files.rows {
		key := r["File"]
		if !identifierRE.MatchString(key) {
			return nil, fmt.Errorf("unsafe name in the File table: key %q", key)
		}
		name, err := longName(r["FileName"])
		if err != nil {
			return nil, fmt.Errorf("unsafe name in the File table, row %s: FileName %q: %v", key, r["FileName"], err)
		}
		dir, ok := dirs[compDir[r["Component_"]]]
		if !ok {
			return nil, fmt.Errorf("File table, row %s: component %q has no known directory", key, r["Component_"])
		}
		size, err1 := strconv.ParseInt(r["FileSize"], 10, 64)
		seq, err2 := strconv.Atoi(r["Sequence"])
		if err1 != nil || err2 != nil || size < 0 {
			return nil, fmt.Errorf("File table, row %s: FileSize %q or Sequence %q is not a number", key, r["FileSize"], r["Sequence"])
		}
		out = append(out, msiFile{key: key, name: name, path: append(append([]string(nil), dir...), name), size: size, seq: seq, md5: md5s[key]})
	}
	return out, nil
}

// fileHashes reads MsiFileHash: the MD5 of each unversioned file as four
// little-endian 32-bit parts.
func fileHashes(tb *table) (map[string][]byte, error) {
	out := map[string][]byte{}
	if tb == nil {
		return out, nil
	}
	if err := tb.require("File_", "HashPart1", "HashPart2", "HashPart3", "HashPart4"); err != nil {
		return nil, err
	}
	for _, r := range tb.rows {
		b := make([]byte, 16)
		for i := 0; i < 4; i++ {
			v, err := strconv.ParseInt(r["HashPart"+strconv.Itoa(i+1)], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("MsiFileHash, row %s: HashPart%d %q", r["File_"], i+1, r["HashPart"+strconv.Itoa(i+1)])
			}
			binary.LittleEndian.PutUint32(b[4*i:], uint32(int32(v)))
		}
		out[r["File_"]] = b
	}
	return out, nil
}

// readMedia reads the Media table, sorted by LastSequence.
func readMedia(tb *table) ([]medium, error) {
	if err := tb.require("LastSequence", "Cabinet"); err != nil {
		return nil, err
	}
	var out []medium
	for _, r := range tb.rows {
		n, err := strconv.Atoi(r["LastSequence"])
		if err != nil {
			return nil, fmt.Errorf("Media table: LastSequence %q is not a number", r["LastSequence"])
		}
		out = append(out, medium{lastSeq: n, cabinet: r["Cabinet"]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lastSeq < out[j].lastSeq })
	return out, nil
}

// cabinetStream returns the embedded cabinet stream holding file f.
func (l *layout) cabinetStream(f msiFile) (string, error) {
	for _, m := range l.media {
		if f.seq > m.lastSeq {
			continue
		}
		stream, embedded := strings.CutPrefix(m.cabinet, "#")
		switch {
		case m.cabinet == "":
			return "", fmt.Errorf("not compressed in a cabinet (Media row without Cabinet)")
		case !embedded:
			return "", fmt.Errorf("in the external cabinet %q, not in the MSI", m.cabinet)
		case validName(stream) != nil || strings.HasPrefix(stream, "-"):
			return "", fmt.Errorf("Media table: cabinet stream name %q", m.cabinet)
		}
		return stream, nil
	}
	return "", fmt.Errorf("sequence %d is on no Media row", f.seq)
}

// targets finds tools\kernel and tools\artifacts.vhd or tools\modules.vhd
// of the WSL folder (artifacts.vhd when both exist).
func (l *layout) targets() (kernel, modules msiFile, err error) {
	find := func(name string) (*msiFile, error) {
		var hit *msiFile
		for i := range l.files {
			f := &l.files[i]
			n := len(f.path)
			if n >= 3 && strings.EqualFold(f.path[n-3], "WSL") && strings.EqualFold(f.path[n-2], "tools") && strings.EqualFold(f.path[n-1], name) {
				if hit != nil {
					return nil, fmt.Errorf("two files install as %s: %s and %s", f.pathString(), hit.key, f.key)
				}
				hit = f
			}
		}
		return hit, nil
	}
	k, err := find(KernelName)
	if err != nil {
		return msiFile{}, msiFile{}, err
	}
	if k == nil {
		return msiFile{}, msiFile{}, fmt.Errorf("no WSL\\tools\\kernel in the File table (%s)", l.toolsFiles())
	}
	for _, n := range []string{ArtifactsVHD, ModulesVHD} {
		m, err := find(n)
		if err != nil {
			return msiFile{}, msiFile{}, err
		}
		if m != nil {
			return *k, *m, nil
		}
	}
	return msiFile{}, msiFile{}, fmt.Errorf("no WSL\\tools\\modules.vhd or WSL\\tools\\artifacts.vhd in the File table (%s)", l.toolsFiles())
}

// toolsFiles names, for an error, the files of the MSI's tools folders.
func (l *layout) toolsFiles() string {
	var names []string
	for _, f := range l.files {
		if n := len(f.path); n >= 2 && strings.EqualFold(f.path[n-2], "tools") {
			names = append(names, f.pathString())
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf("%d files, none in a tools folder", len(l.files))
	}
	if len(names) > 8 {
		names = append(names[:8], "…")
	}
	return "tools files: " + strings.Join(names, ", ")
}
