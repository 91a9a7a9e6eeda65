package depmod

import (
	"bytes"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/depmod/index"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
)

// Output file names, in the order depmod writes them.
const (
	FileDep            = "modules.dep"
	FileDepBin         = "modules.dep.bin"
	FileAlias          = "modules.alias"
	FileAliasBin       = "modules.alias.bin"
	FileSoftdep        = "modules.softdep"
	FileWeakdep        = "modules.weakdep"
	FileSymbols        = "modules.symbols"
	FileSymbolsBin     = "modules.symbols.bin"
	FileBuiltinBin     = "modules.builtin.bin"
	FileBuiltinAliasBn = "modules.builtin.alias.bin"
	FileDevname        = "modules.devname"
)

// OutputFiles lists every file Generate produces, in write order
// (modtree.IndexFiles: the one list). kmod 30 writes all of them except
// modules.weakdep.
var OutputFiles = modtree.IndexFiles

// DefaultSearch is the default ranking of directories for duplicate module
// names: a module under updates/ beats one under extra/, which beats any
// other ("built-in" stands for every directory not listed).
var DefaultSearch = []string{"updates", "extra", "built-in"}

// MaxModules is kmod's limit on the number of modules (exclusive).
const MaxModules = 65535

// VmlinuxSymbol is a symbol provided by the kernel image, known from
// Module.symvers (with a CRC) or System.map (without).
type VmlinuxSymbol struct {
	CRC    uint64
	HasCRC bool
}

// GenerateOptions controls Generate. modules.order, modules.builtin and
// modules.builtin.modinfo come from the tree (Tree.Order, Builtin,
// BuiltinModinfo).
type GenerateOptions struct {
	// Dir is the module directory as messages name it ("" for
	// "modules.order" alone).
	Dir string
	// Search ranks directories for duplicate module names (see
	// DefaultSearch, used when nil).
	Search []string
	// Vmlinux holds the kernel's own symbols (see ReadSymvers and
	// ReadSystemMap). They are used only by the checks and never change
	// an output file.
	Vmlinux map[string]VmlinuxSymbol
	// CheckCRCs compares needed symbols' CRCs against their providers
	// (depmod -E); it needs ErrSyms.
	CheckCRCs bool
	// ErrSyms reports needed symbols no module or vmlinux provides
	// (depmod -e); it needs Vmlinux.
	ErrSyms bool
}

// File is one generated output file.
type File struct {
	Name string
	Data []byte
}

// Result is the output of Generate.
type Result struct {
	// Files in write order (see OutputFiles).
	Files []File
	// Order is the module paths in index order (modules.dep line order).
	Order []string
	Report
}

// File returns the content of the named output file, or nil.
func (r *Result) File(name string) []byte {
	for _, f := range r.Files {
		if f.Name == name {
			return f.Data
		}
	}
	return nil
}

// Duplicate records two module files with the same module name.
type Duplicate struct {
	Name   string
	Winner string // path of the module kept
	Loser  string // path of the module ignored
}

// Report summarises what depmod found besides its output.
type Report struct {
	// Modules is the number of modules indexed.
	Modules    int
	Duplicates []Duplicate
	// Problems are the findings of the checks (with ErrSyms), in kmod's
	// order: by module in index order, then by needed symbol.
	Problems []modtree.Problem
	// Unresolved lists needed symbols nobody provides (with ErrSyms), and
	// CRCMismatches those whose CRC differs from the provider's (with
	// ErrSyms and CheckCRCs): Problems split by kind.
	Unresolved    []modtree.Problem
	CRCMismatches []modtree.Problem
	// LoadWarnings are findings about the inputs, which kmod reports
	// before the symbol checks (a modules.order line without its newline);
	// Warnings are the other non-fatal findings, reported after them as
	// the files are written. Both in kmod's wording where it has one.
	LoadWarnings []string
	Warnings     []string
}

// CycleError reports modules whose dependencies form cycles.
type CycleError struct {
	// Cycles lists each cycle as module names, the first repeated at the
	// end (a -> b -> a).
	Cycles [][]string
	// Paths lists the paths of the modules in cycles.
	Paths []string
}

func (e *CycleError) Error() string {
	var parts []string
	for _, c := range e.Cycles {
		parts = append(parts, strings.Join(c, " -> "))
	}
	return fmt.Sprintf("dependency cycle: %s (modules: %s)", strings.Join(parts, "; "), strings.Join(e.Paths, ", "))
}

// mod is a module being indexed.
type mod struct {
	*modtree.Entry
	// Name is the module name derived from Path.
	Name    string
	idx     int
	deps    []int32 // direct dependencies, in discovery order
	users   int
	sortIdx int
}

// searchRank returns the rank of path under the search list (lower wins).
func searchRank(search []string, path string) int {
	builtin := len(search)
	for i, d := range search {
		if d == "built-in" {
			builtin = i
			continue
		}
		if strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return i
		}
	}
	return builtin
}

// Generate computes every depmod output file for tree, byte-identical to
// kmod 30's depmod when the modules are all listed in modules.order (see
// package documentation for the deviations). Nothing is written.
func Generate(tree *modtree.Tree, o GenerateOptions) (*Result, error) {
	search := o.Search
	if search == nil {
		search = DefaultSearch
	}
	res := &Result{}
	rep := &res.Report
	if tree.OrderUnterminated {
		// kmod then ignores modules.order altogether; we still use it.
		rep.LoadWarnings = append(rep.LoadWarnings, fmt.Sprintf("%s:%d corrupted line misses '\\n'",
			path.Join(filepath.ToSlash(o.Dir), modtree.OrderFile), len(tree.Order)))
	}
	mods, err := dedupModules(tree.Modules, search, rep)
	if err != nil {
		return nil, err
	}
	orderModules(mods, tree.Order)
	res.Order = make([]string, len(mods))
	for i, m := range mods {
		m.idx = i
		res.Order[i] = m.Path
	}
	rep.Modules = len(mods)
	owner := linkDependencies(mods)
	if o.ErrSyms {
		check(tree, mods, o, rep)
	}
	if err := sortTopological(mods); err != nil {
		return nil, err
	}
	if err := writeOutputs(res, mods, owner, tree); err != nil {
		return nil, err
	}
	return res, nil
}

// dedupModules keeps, of modules with the same name, the best-ranked one
// (equal rank: the first in path order), reporting the others.
func dedupModules(entries []*modtree.Entry, search []string, rep *Report) ([]*mod, error) {
	sorted := make([]*modtree.Entry, 0, len(entries))
	sorted = append(sorted, entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	byName := make(map[string]int, len(sorted))
	var mods []*mod
	for _, e := range sorted {
		if e == nil || e.Module == nil {
			continue
		}
		name := kmodule.ModName(e.Path)
		if i, dup := byName[name]; dup {
			old := mods[i]
			if searchRank(search, e.Path) < searchRank(search, old.Path) {
				rep.Duplicates = append(rep.Duplicates, Duplicate{Name: name, Winner: e.Path, Loser: old.Path})
				mods[i] = &mod{Entry: e, Name: name}
			} else {
				rep.Duplicates = append(rep.Duplicates, Duplicate{Name: name, Winner: old.Path, Loser: e.Path})
			}
			continue
		}
		byName[name] = len(mods)
		mods = append(mods, &mod{Entry: e, Name: name})
	}
	if len(mods) >= MaxModules {
		return nil, fmt.Errorf("depmod: %d modules, kmod supports fewer than %d", len(mods), MaxModules)
	}
	return mods, nil
}

// orderModules sorts modules by their modules.order position (the last
// occurrence of a line wins), unlisted ones last by path.
func orderModules(mods []*mod, order []string) {
	if order == nil {
		return
	}
	pos := make(map[string]int, len(order))
	for i, l := range order {
		pos[l] = i
	}
	const unlisted = int(^uint(0) >> 1)
	key := make(map[*mod]int, len(mods))
	for _, m := range mods {
		p, ok := pos[kmodule.StripCompressionSuffix(m.Path)]
		if !ok {
			p = unlisted
		}
		key[m] = p
	}
	sort.SliceStable(mods, func(i, j int) bool {
		if key[mods[i]] != key[mods[j]] {
			return key[mods[i]] < key[mods[j]]
		}
		return mods[i].Path < mods[j].Path
	})
}

// linkDependencies makes each module depend on the owners of the symbols
// it needs (the module later in order owns a symbol exported twice) and
// returns the owner of every exported symbol.
func linkDependencies(mods []*mod) map[string]int32 {
	n := 0
	for _, m := range mods {
		n += len(m.Exports)
	}
	owner := make(map[string]int32, n)
	for _, m := range mods {
		for _, s := range m.Exports {
			owner[s.Name] = int32(m.idx)
		}
	}
	for _, m := range mods {
		for _, need := range m.Needs {
			oi, owned := owner[need.Name]
			if !owned || need.VersionsOnly || slices.Contains(m.deps, oi) {
				continue
			}
			m.deps = append(m.deps, oi)
			mods[oi].users++
		}
	}
	return owner
}

// check runs depmod -e (-E) through the one validator, over the modules
// in index order, so problems come in kmod's order.
func check(tree *modtree.Tree, mods []*mod, o GenerateOptions, rep *Report) {
	if o.Vmlinux == nil {
		rep.Warnings = append(rep.Warnings, "-e needs -E or -F")
		return
	}
	view := &modtree.Tree{Release: tree.Release, Modules: make([]*modtree.Entry, len(mods)),
		Symvers: make(map[string]modtree.SymverEntry, len(o.Vmlinux))}
	for i, m := range mods {
		view.Modules[i] = m.Entry
	}
	for name, v := range o.Vmlinux {
		view.Symvers[name] = modtree.SymverEntry{CRC: v.CRC, Module: modtree.ProviderVmlinux}
	}
	rep.Problems = view.Validate(modtree.ValidateOptions{Kmod: true, CRCs: o.CheckCRCs})
	for _, p := range rep.Problems {
		switch p.Kind {
		case modtree.Unresolved:
			rep.Unresolved = append(rep.Unresolved, p)
		case modtree.CRCMismatch:
			rep.CRCMismatches = append(rep.CRCMismatches, p)
		}
	}
}

// sortTopological numbers the modules users-before-used (sortIdx), or
// reports the dependency cycles.
func sortTopological(mods []*mod) error {
	roots := make([]int32, 0, len(mods))
	users := make([]int, len(mods))
	for i, m := range mods {
		users[i] = m.users
		if m.users == 0 {
			roots = append(roots, int32(m.idx))
		}
	}
	sorted := 0
	for len(roots) > 0 {
		m := mods[roots[len(roots)-1]]
		roots = roots[:len(roots)-1]
		m.sortIdx = sorted
		sorted++
		for _, d := range m.deps {
			users[d]--
			if users[d] == 0 {
				roots = append(roots, d)
			}
		}
	}
	if sorted < len(mods) {
		return cycleError(mods, users)
	}
	return nil
}

// cycleError describes the cycles among the modules left unsorted.
func cycleError(mods []*mod, users []int) error {
	e := &CycleError{}
	for _, c := range unsortedComponents(mods, users) {
		path, ok := componentCycle(mods, c)
		if !ok {
			continue
		}
		e.Cycles = append(e.Cycles, path)
		var ps []int32
		ps = append(ps, c...)
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		for _, v := range ps {
			e.Paths = append(e.Paths, mods[v].Path)
		}
	}
	return fmt.Errorf("depmod: %w", e)
}

// sccFinder is the state of Tarjan's strongly connected components
// algorithm over the modules in left.
type sccFinder struct {
	mods    []*mod
	left    map[int32]bool
	index   map[int32]int
	low     map[int32]int
	onStack map[int32]bool
	stack   []int32
	sccs    [][]int32
}

// unsortedComponents returns the strongly connected components of the
// dependency graph among the modules left unsorted (users[i] > 0).
func unsortedComponents(mods []*mod, users []int) [][]int32 {
	f := &sccFinder{mods: mods, left: map[int32]bool{}, index: map[int32]int{}, low: map[int32]int{}, onStack: map[int32]bool{}}
	for i := range mods {
		if users[i] > 0 {
			f.left[int32(i)] = true
		}
	}
	for i := range mods {
		if v := int32(i); f.left[v] {
			if _, seen := f.index[v]; !seen {
				f.visit(v)
			}
		}
	}
	return f.sccs
}

// visit is Tarjan's depth-first step from v, appending each component
// it completes to f.sccs.
func (f *sccFinder) visit(v int32) {
	f.index[v] = len(f.index)
	f.low[v] = f.index[v]
	f.stack = append(f.stack, v)
	f.onStack[v] = true
	for _, w := range f.mods[v].deps {
		if !f.left[w] {
			continue
		}
		if _, seen := f.index[w]; !seen {
			f.visit(w)
			f.low[v] = min(f.low[v], f.low[w])
		} else if f.onStack[w] {
			f.low[v] = min(f.low[v], f.index[w])
		}
	}
	if f.low[v] == f.index[v] {
		var c []int32
		for {
			w := f.stack[len(f.stack)-1]
			f.stack = f.stack[:len(f.stack)-1]
			f.onStack[w] = false
			c = append(c, w)
			if w == v {
				break
			}
		}
		f.sccs = append(f.sccs, c)
	}
}

// componentCycle returns the module names along a shortest cycle through
// the lowest-numbered module of the component c, starting and ending
// there; ok is false if c is a single module that does not depend on
// itself (no cycle).
func componentCycle(mods []*mod, c []int32) (path []string, ok bool) {
	in := map[int32]bool{}
	for _, v := range c {
		in[v] = true
	}
	start := c[0]
	for _, v := range c {
		start = min(start, v)
	}
	selfLoop := false
	for _, d := range mods[start].deps {
		selfLoop = selfLoop || d == start
	}
	if len(c) == 1 && !selfLoop {
		return nil, false
	}
	prev := shortestCycle(mods, in, start)
	path = []string{mods[start].Name}
	for v := prev[start]; v != start; v = prev[v] {
		path = append(path, mods[v].Name)
	}
	path = append(path, mods[start].Name)
	// The walk went backwards; reverse the middle.
	for i, j := 1, len(path)-2; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	return path, true
}

// shortestCycle finds a shortest path start -> ... -> start among the
// modules in in, by breadth-first search; it returns each module's
// predecessor on it.
func shortestCycle(mods []*mod, in map[int32]bool, start int32) map[int32]int32 {
	prev := map[int32]int32{}
	queue := []int32{start}
	found := false
	for len(queue) > 0 && !found {
		v := queue[0]
		queue = queue[1:]
		for _, d := range mods[v].deps {
			if !in[d] {
				continue
			}
			if d == start {
				prev[start] = v
				found = true
				break
			}
			if _, seen := prev[d]; !seen {
				prev[d] = v
				queue = append(queue, d)
			}
		}
	}
	return prev
}

// writeOutputs renders every output file into res.Files.
func writeOutputs(res *Result, mods []*mod, owner map[string]int32, tree *modtree.Tree) error {
	files := map[string][]byte{}
	steps := []func() error{
		func() error { return writeDep(files, mods) },
		func() error { return writeModinfo(files, mods, &res.Report) },
		func() error { return writeSymbols(files, mods, owner) },
		func() error { return writeBuiltin(files, tree.Builtin, &res.Report) },
		func() error { return writeBuiltinAliases(files, tree.BuiltinModinfo, &res.Report) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	for _, n := range OutputFiles {
		res.Files = append(res.Files, File{Name: n, Data: files[n]})
	}
	return nil
}

// putIndex renders an index into files.
func putIndex(files map[string][]byte, name string, t *index.Trie) error {
	b, err := t.Bytes()
	if err != nil {
		return fmt.Errorf("depmod: %s: %w", name, err)
	}
	files[name] = b
	return nil
}

// writeDep renders modules.dep and modules.dep.bin: each module with the
// closure of its dependencies in topological order.
func writeDep(files map[string][]byte, mods []*mod) error {
	var dep bytes.Buffer
	var depIdx index.Trie
	mark := make([]int, len(mods))
	for i := range mark {
		mark[i] = -1
	}
	var closure []int32
	var line []byte
	for _, m := range mods {
		if !isASCII(m.Path) {
			return fmt.Errorf("depmod: %s: module path is not 7-bit ASCII", m.Path)
		}
		closure = closure[:0]
		var walk func(v int32)
		walk = func(v int32) {
			for _, d := range mods[v].deps {
				if mark[d] != m.idx {
					mark[d] = m.idx
					closure = append(closure, d)
					walk(d)
				}
			}
		}
		mark[m.idx] = m.idx
		walk(int32(m.idx))
		sort.Slice(closure, func(i, j int) bool { return mods[closure[i]].sortIdx < mods[closure[j]].sortIdx })
		line = append(line[:0], m.Path...)
		line = append(line, ':')
		for _, d := range closure {
			line = append(line, ' ')
			line = append(line, mods[d].Path...)
		}
		dep.Write(line)
		dep.WriteByte('\n')
		if err := depIdx.Add(m.Name, string(line), uint32(m.idx)); err != nil {
			return fmt.Errorf("depmod: %s: %w", m.Path, err)
		}
	}
	files[FileDep] = dep.Bytes()
	return putIndex(files, FileDepBin, &depIdx)
}

// modinfoText is the text files rendered from .modinfo records.
type modinfoText struct {
	alias, softdep, weakdep, devname bytes.Buffer
	aliasIdx                         index.Trie
}

// writeModinfo renders modules.alias (and its index), modules.softdep,
// modules.weakdep and modules.devname from the modules' .modinfo.
func writeModinfo(files map[string][]byte, mods []*mod, rep *Report) error {
	var t modinfoText
	t.alias.WriteString("# Aliases extracted from modules themselves.\n")
	t.softdep.WriteString("# Soft dependencies extracted from modules themselves.\n")
	t.weakdep.WriteString("# Weak dependencies extracted from modules themselves.\n")
	for _, m := range mods {
		if err := t.module(m, rep); err != nil {
			return err
		}
	}
	files[FileAlias] = t.alias.Bytes()
	files[FileSoftdep] = t.softdep.Bytes()
	files[FileWeakdep] = t.weakdep.Bytes()
	files[FileDevname] = t.devname.Bytes()
	return putIndex(files, FileAliasBin, &t.aliasIdx)
}

// module adds one module's records. Values with control characters
// (which would inject lines into the text files) are skipped with a
// warning.
func (t *modinfoText) module(m *mod, rep *Report) error {
	var dev string
	var devType byte
	var major, minor uint32
	devDone := false
	for _, kv := range m.ModInfo {
		switch kv.Key {
		case "alias", "softdep", "weakdep":
		default:
			continue
		}
		if hasControl(kv.Value) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: .modinfo %s value %q has control characters (skipped)", m.Path, kv.Key, kv.Value))
			continue
		}
		switch kv.Key {
		case "alias":
			if err := t.addAlias(m, kv.Value, rep); err != nil {
				return err
			}
			if devDone {
				continue
			}
			if d, ok := strings.CutPrefix(kv.Value, "devname:"); ok {
				dev = d
			} else if ma, mi, ok := parseMajorMinor(kv.Value, "char-major-"); ok {
				devType, major, minor = 'c', ma, mi
			} else if ma, mi, ok := parseMajorMinor(kv.Value, "block-major-"); ok {
				devType, major, minor = 'b', ma, mi
			}
			devDone = dev != "" && devType != 0
		case "softdep":
			fmt.Fprintf(&t.softdep, "softdep %s %s\n", m.Name, kv.Value)
		case "weakdep":
			fmt.Fprintf(&t.weakdep, "weakdep %s %s\n", m.Name, kv.Value)
		}
	}
	if dev == "" {
		return nil
	}
	if devType == 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("Module '%s' has devname (%s) but lacks major and minor information. Ignoring.", m.Name, dev))
		return nil
	}
	if t.devname.Len() == 0 {
		t.devname.WriteString("# Device nodes to trigger on-demand module loading.\n")
	}
	t.devname.WriteString(m.Name + " " + dev + " " + string(devType) +
		strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10) + "\n")
	return nil
}

func (t *modinfoText) addAlias(m *mod, value string, rep *Report) error {
	t.alias.WriteString("alias ")
	t.alias.WriteString(value)
	t.alias.WriteByte(' ')
	t.alias.WriteString(m.Name)
	t.alias.WriteByte('\n')
	key, err := aliasNormalize(value)
	if err != nil {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %v (alias skipped)", m.Path, err))
		return nil
	}
	if err := t.aliasIdx.Add(key, m.Name, uint32(m.idx)); err != nil {
		return fmt.Errorf("depmod: %s: .modinfo alias: %w", m.Path, err)
	}
	return nil
}

// hasControl reports whether s holds an ASCII control character.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// writeSymbols renders modules.symbols in kmod's hash-table order, and
// its index.
func writeSymbols(files map[string][]byte, mods []*mod, owner map[string]int32) error {
	type sym struct {
		name   string
		bucket uint32
		owner  int32
	}
	syms := make([]sym, 0, len(owner))
	for n, oi := range owner {
		syms = append(syms, sym{n, superFastHash(n) & (symbolBuckets - 1), oi})
	}
	sort.Slice(syms, func(i, j int) bool {
		if syms[i].bucket != syms[j].bucket {
			return syms[i].bucket < syms[j].bucket
		}
		return syms[i].name < syms[j].name
	})
	var symbols bytes.Buffer
	symbols.WriteString("# Aliases for symbols, used by symbol_request().\n")
	var symIdx index.Trie
	for _, s := range syms {
		m := mods[s.owner]
		symbols.WriteString("alias symbol:")
		symbols.WriteString(s.name)
		symbols.WriteByte(' ')
		symbols.WriteString(m.Name)
		symbols.WriteByte('\n')
		if err := symIdx.Add("symbol:"+s.name, m.Name, uint32(m.idx)); err != nil {
			return fmt.Errorf("depmod: %s: exported symbol: %w", m.Path, err)
		}
	}
	files[FileSymbols] = symbols.Bytes()
	return putIndex(files, FileSymbolsBin, &symIdx)
}

// writeBuiltin renders modules.builtin.bin from modules.builtin.
func writeBuiltin(files map[string][]byte, builtin []byte, rep *Report) error {
	var idx index.Trie
	if builtin != nil {
		text := strings.TrimSuffix(string(builtin), "\n")
		for i, l := range strings.Split(text, "\n") {
			if text == "" {
				break
			}
			if l == "" || !(l[0] >= 'a' && l[0] <= 'z' || l[0] >= 'A' && l[0] <= 'Z') {
				rep.Warnings = append(rep.Warnings, "Invalid modules.builtin line: "+l)
				continue
			}
			if err := idx.Add(kmodule.ModName(l), "", 0); err != nil {
				return fmt.Errorf("depmod: modules.builtin:%d: %w", i+1, err)
			}
		}
	}
	return putIndex(files, FileBuiltinBin, &idx)
}

// writeBuiltinAliases renders modules.builtin.alias.bin from the alias
// records of modules.builtin.modinfo.
func writeBuiltinAliases(files map[string][]byte, modinfo []byte, rep *Report) error {
	var idx index.Trie
	d := modinfo
	off := 0
	for len(d) > 0 {
		rec := d
		n := len(d)
		if j := bytes.IndexByte(d, 0); j >= 0 {
			rec, n = d[:j], j+1
		}
		recOff := off
		d, off = d[n:], off+n
		name, kv, ok := bytes.Cut(rec, []byte{'.'})
		if !ok {
			continue
		}
		val, ok := bytes.CutPrefix(kv, []byte("alias="))
		if !ok {
			continue
		}
		key, err := aliasNormalize(string(val))
		if err != nil {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("modules.builtin.modinfo: %s: %v (alias skipped)", name, err))
			continue
		}
		if err := idx.Add(key, string(name), 0); err != nil {
			return fmt.Errorf("depmod: modules.builtin.modinfo: record at offset %d (%s): %w", recOff, name, err)
		}
	}
	return putIndex(files, FileBuiltinAliasBn, &idx)
}
