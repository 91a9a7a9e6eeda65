package depmod

import (
	"bytes"
	"fmt"
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

// OutputFiles lists every file Generate produces, in write order. kmod 30
// writes all of them except modules.weakdep.
var OutputFiles = []string{
	FileDep, FileDepBin, FileAlias, FileAliasBin, FileSoftdep, FileWeakdep,
	FileSymbols, FileSymbolsBin, FileBuiltinBin, FileBuiltinAliasBn, FileDevname,
}

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

// Inputs are the files besides the modules that depmod reads.
type Inputs struct {
	// Order holds the lines of modules.order; nil if there is none.
	Order []string
	// Builtin is the content of modules.builtin; nil if missing.
	Builtin []byte
	// BuiltinModinfo is the content of modules.builtin.modinfo; nil if
	// missing.
	BuiltinModinfo []byte
	// Warnings found while reading the inputs; Generate copies them into
	// its Report.
	Warnings []string
}

// GenerateOptions controls Generate.
type GenerateOptions struct {
	Inputs
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

// SymbolProblem is an unresolved symbol or a CRC mismatch.
type SymbolProblem struct {
	Module string // module path, relative to the module directory
	Symbol string
	// For CRC mismatches: the module's CRC and the provider's.
	Have, Want uint64
	// Provider is the path of the providing module, or "vmlinux".
	Provider string
}

// Report summarises what depmod found besides its output.
type Report struct {
	// Modules is the number of modules indexed.
	Modules    int
	Duplicates []Duplicate
	// Unresolved lists needed symbols nobody provides (with ErrSyms).
	Unresolved []SymbolProblem
	// CRCMismatches lists needed symbols whose CRC differs from the
	// provider's (with ErrSyms and CheckCRCs).
	CRCMismatches []SymbolProblem
	// Warnings are other non-fatal findings, in kmod's wording where it
	// has one.
	Warnings []string
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
	rep.Warnings = append(rep.Warnings, o.Inputs.Warnings...)

	// Duplicates: keep the best-ranked module; equal rank keeps the first
	// in path order.
	entries := make([]*modtree.Entry, 0, len(tree.Modules))
	entries = append(entries, tree.Modules...)
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	byName := make(map[string]int, len(entries))
	var mods []*mod
	for _, e := range entries {
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

	// Module order: modules.order positions (the last occurrence of a
	// line wins), then unlisted modules by path.
	if o.Order != nil {
		pos := make(map[string]int, len(o.Order))
		for i, l := range o.Order {
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
	res.Order = make([]string, len(mods))
	for i, m := range mods {
		m.idx = i
		res.Order[i] = m.Path
	}
	rep.Modules = len(mods)

	// Exported symbols: the module later in order owns a symbol.
	nExports := 0
	for _, m := range mods {
		nExports += len(m.Exports)
	}
	owner := make(map[string]int32, nExports)
	ownerCRC := make(map[string]uint64, nExports)
	for _, m := range mods {
		for _, s := range m.Exports {
			owner[s.Name] = int32(m.idx)
			ownerCRC[s.Name] = s.CRC
		}
	}

	// Direct dependencies and the checks.
	checks := o.ErrSyms && o.Vmlinux != nil
	if o.ErrSyms && o.Vmlinux == nil {
		rep.Warnings = append(rep.Warnings, "-e needs -E or -F")
	}
	for _, m := range mods {
		for _, n := range m.Needs {
			oi, owned := owner[n.Name]
			if owned && !n.VersionsOnly {
				dup := false
				for _, d := range m.deps {
					if d == oi {
						dup = true
						break
					}
				}
				if !dup {
					m.deps = append(m.deps, oi)
					mods[oi].users++
				}
			}
			if !checks || n.Weak {
				continue
			}
			var crc uint64
			provider := "vmlinux"
			switch vs, inVmlinux := o.Vmlinux[n.Name]; {
			case owned:
				crc, provider = ownerCRC[n.Name], mods[oi].Path
			case inVmlinux:
				crc = vs.CRC
			default:
				rep.Unresolved = append(rep.Unresolved, SymbolProblem{Module: m.Path, Symbol: n.Name})
				continue
			}
			if o.CheckCRCs && uint32(crc) != uint32(n.CRC) {
				rep.CRCMismatches = append(rep.CRCMismatches, SymbolProblem{Module: m.Path, Symbol: n.Name,
					Have: n.CRC, Want: crc, Provider: provider})
			}
		}
	}

	// Topological order: users before the modules they use.
	roots := make([]int32, 0, len(mods))
	for _, m := range mods {
		if m.users == 0 {
			roots = append(roots, int32(m.idx))
		}
	}
	users := make([]int, len(mods))
	for i, m := range mods {
		users[i] = m.users
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
		return nil, cycleError(mods, users)
	}

	if err := writeOutputs(res, mods, owner, o.Inputs); err != nil {
		return nil, err
	}
	return res, nil
}

// cycleError describes the cycles among the modules left unsorted.
func cycleError(mods []*mod, users []int) error {
	left := map[int32]bool{}
	for i := range mods {
		if users[i] > 0 {
			left[int32(i)] = true
		}
	}
	// Tarjan's strongly connected components over the unsorted modules.
	index := map[int32]int{}
	low := map[int32]int{}
	onStack := map[int32]bool{}
	var stack []int32
	var sccs [][]int32
	var visit func(v int32)
	visit = func(v int32) {
		index[v] = len(index)
		low[v] = index[v]
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range mods[v].deps {
			if !left[w] {
				continue
			}
			if _, seen := index[w]; !seen {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var c []int32
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				c = append(c, w)
				if w == v {
					break
				}
			}
			sccs = append(sccs, c)
		}
	}
	for i := range mods {
		if v := int32(i); left[v] {
			if _, seen := index[v]; !seen {
				visit(v)
			}
		}
	}
	e := &CycleError{}
	for _, c := range sccs {
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
			continue
		}
		// Shortest path start -> ... -> start inside the component.
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
		path := []string{mods[start].Name}
		for v := prev[start]; v != start; v = prev[v] {
			path = append(path, mods[v].Name)
		}
		path = append(path, mods[start].Name)
		// The walk went backwards; reverse the middle.
		for i, j := 1, len(path)-2; i < j; i, j = i+1, j-1 {
			path[i], path[j] = path[j], path[i]
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

// writeOutputs renders every output file into res.Files.
func writeOutputs(res *Result, mods []*mod, owner map[string]int32, in Inputs) error {
	rep := &res.Report
	files := map[string][]byte{}
	bin := func(name string, t *index.Trie) error {
		b, err := t.Bytes()
		if err != nil {
			return fmt.Errorf("depmod: %s: %w", name, err)
		}
		files[name] = b
		return nil
	}

	// modules.dep and modules.dep.bin.
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
	if err := bin(FileDepBin, &depIdx); err != nil {
		return err
	}

	// modules.alias, modules.softdep, modules.weakdep, modules.devname.
	var alias, softdep, weakdep, devname bytes.Buffer
	alias.WriteString("# Aliases extracted from modules themselves.\n")
	softdep.WriteString("# Soft dependencies extracted from modules themselves.\n")
	weakdep.WriteString("# Weak dependencies extracted from modules themselves.\n")
	var aliasIdx index.Trie
	for _, m := range mods {
		var dev string
		var devType byte
		var major, minor uint32
		devDone := false
		for _, kv := range m.ModInfo {
			switch kv.Key {
			case "alias":
				alias.WriteString("alias ")
				alias.WriteString(kv.Value)
				alias.WriteByte(' ')
				alias.WriteString(m.Name)
				alias.WriteByte('\n')
				key, err := aliasNormalize(kv.Value)
				if err != nil {
					rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %v (alias skipped)", m.Path, err))
				} else if err := aliasIdx.Add(key, m.Name, uint32(m.idx)); err != nil {
					return fmt.Errorf("depmod: %s: .modinfo alias: %w", m.Path, err)
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
				fmt.Fprintf(&softdep, "softdep %s %s\n", m.Name, kv.Value)
			case "weakdep":
				fmt.Fprintf(&weakdep, "weakdep %s %s\n", m.Name, kv.Value)
			}
		}
		if dev != "" {
			if devType == 0 {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("Module '%s' has devname (%s) but lacks major and minor information. Ignoring.", m.Name, dev))
				continue
			}
			if devname.Len() == 0 {
				devname.WriteString("# Device nodes to trigger on-demand module loading.\n")
			}
			devname.WriteString(m.Name + " " + dev + " " + string(devType) +
				strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10) + "\n")
		}
	}
	files[FileAlias] = alias.Bytes()
	if err := bin(FileAliasBin, &aliasIdx); err != nil {
		return err
	}
	files[FileSoftdep] = softdep.Bytes()
	files[FileWeakdep] = weakdep.Bytes()
	files[FileDevname] = devname.Bytes()

	// modules.symbols in kmod's hash-table order, and its index.
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
	if err := bin(FileSymbolsBin, &symIdx); err != nil {
		return err
	}

	// modules.builtin.bin and modules.builtin.alias.bin.
	var builtinIdx, builtinAliasIdx index.Trie
	if in.Builtin != nil {
		text := strings.TrimSuffix(string(in.Builtin), "\n")
		for i, l := range strings.Split(text, "\n") {
			if text == "" {
				break
			}
			if l == "" || !(l[0] >= 'a' && l[0] <= 'z' || l[0] >= 'A' && l[0] <= 'Z') {
				rep.Warnings = append(rep.Warnings, "Invalid modules.builtin line: "+l)
				continue
			}
			if err := builtinIdx.Add(kmodule.ModName(l), "", 0); err != nil {
				return fmt.Errorf("depmod: modules.builtin:%d: %w", i+1, err)
			}
		}
	}
	if in.BuiltinModinfo != nil {
		d := in.BuiltinModinfo
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
			if err := builtinAliasIdx.Add(key, string(name), 0); err != nil {
				return fmt.Errorf("depmod: modules.builtin.modinfo: record at offset %d (%s): %w", recOff, name, err)
			}
		}
	}
	if err := bin(FileBuiltinBin, &builtinIdx); err != nil {
		return err
	}
	if err := bin(FileBuiltinAliasBn, &builtinAliasIdx); err != nil {
		return err
	}

	for _, n := range OutputFiles {
		res.Files = append(res.Files, File{Name: n, Data: files[n]})
	}
	return nil
}
