package modtree

import (
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
)

// PseudoSymbols are the symbols every module may need without anybody
// exporting them: kmod's depmod treats them as provided by the kernel.
var PseudoSymbols = []string{"__this_module", "_GLOBAL_OFFSET_TABLE_", "TOC."}

// IsPseudo reports whether name is one of PseudoSymbols.
func IsPseudo(name string) bool {
	for _, s := range PseudoSymbols {
		if s == name {
			return true
		}
	}
	return false
}

// ProblemKind classifies a validation problem.
type ProblemKind string

// Problem kinds.
const (
	Unresolved  ProblemKind = "unresolved"
	CRCMismatch ProblemKind = "crc-mismatch"
	Vermagic    ProblemKind = "vermagic"
)

// Provider names used in problems besides module paths.
const ProviderVmlinux = "vmlinux"

// Problem is one finding of Validate.
type Problem struct {
	Kind ProblemKind
	// Module is the module's path and Origin its Entry.Origin.
	Module, Origin string
	// Symbol is the needed symbol (unresolved and CRC mismatches).
	Symbol string
	// Have is what the module carries and Want what it should: CRCs as
	// 0x%08x for mismatches, vermagic strings for vermagic problems.
	Have, Want string
	// Provider is the path of the module that provides Symbol, or
	// ProviderVmlinux (CRC mismatches).
	Provider string
}

// String describes the problem in one line.
func (p Problem) String() string {
	who := p.Module
	if p.Origin != "" {
		who = p.Origin + ": " + p.Module
	}
	switch p.Kind {
	case Unresolved:
		return fmt.Sprintf("%s needs unknown symbol %s", who, p.Symbol)
	case CRCMismatch:
		return fmt.Sprintf("%s disagrees about version of symbol %s (module has %s, %s has %s)", who, p.Symbol, p.Have, p.Provider, p.Want)
	default:
		return fmt.Sprintf("%s: vermagic %q, want %q", who, p.Have, p.Want)
	}
}

// ValidateOptions select the checks of Validate.
type ValidateOptions struct {
	// Vermagic, if set, is the vermagic every module must carry.
	Vermagic string
	// Only, if non-nil, restricts the reported problems to these module
	// paths (the rest of the tree still provides symbols).
	Only map[string]bool
	// Kmod selects kmod depmod's rules for -e (-E with CRCs): needs that
	// come only from __versions are checked too, and CRCs are compared
	// as numbers whether or not a side carries one (then 0). Without it,
	// a CRC is compared only when both sides carry one.
	Kmod bool
	// CRCs compares CRCs in Kmod mode (depmod -E; a System.map gives no
	// CRCs). Without Kmod, CRCs are always compared.
	CRCs bool
}

// crcString formats a CRC as it appears in problems.
func crcString(c uint64) string { return fmt.Sprintf("0x%08x", uint32(c)) }

// Validate checks that every module's needed symbols resolve against the
// modules (the last one in Modules exporting a symbol provides it) or
// Symvers, that CRCs agree, and (optionally) that vermagic matches. Weak
// needs are not checked. Without Symvers, symbols no module exports are
// assumed to be in vmlinux. Problems come in module order, then need
// order.
func (t *Tree) Validate(o ValidateOptions) []Problem {
	type provider struct {
		path string
		sym  *kmodule.Symbol
	}
	exports := map[string]provider{}
	for _, e := range t.Modules {
		for i := range e.Exports {
			exports[e.Exports[i].Name] = provider{e.Path, &e.Exports[i]}
		}
	}
	var out []Problem
	for _, e := range t.Modules {
		if o.Only != nil && !o.Only[e.Path] {
			continue
		}
		if o.Vermagic != "" && e.Vermagic() != o.Vermagic {
			out = append(out, Problem{Kind: Vermagic, Module: e.Path, Origin: e.Origin, Have: e.Vermagic(), Want: o.Vermagic})
		}
		for _, n := range e.Needs {
			if n.Weak {
				continue
			}
			p := Problem{Module: e.Path, Origin: e.Origin, Symbol: n.Name}
			if x, ok := exports[n.Name]; ok {
				if t.crcDiffers(o, n.HasCRC, n.CRC, x.sym.HasCRC, x.sym.CRC) {
					p.Kind, p.Have, p.Want, p.Provider = CRCMismatch, crcString(n.CRC), crcString(x.sym.CRC), x.path
					out = append(out, p)
				}
				continue
			}
			if t.Symvers == nil && !o.Kmod {
				continue
			}
			sv, ok := t.Symvers[n.Name]
			switch {
			case !ok && IsPseudo(n.Name):
			case !ok && n.VersionsOnly && !o.Kmod:
			case !ok:
				p.Kind = Unresolved
				out = append(out, p)
			case t.crcDiffers(o, n.HasCRC, n.CRC, true, sv.CRC):
				p.Kind, p.Have, p.Want, p.Provider = CRCMismatch, crcString(n.CRC), crcString(sv.CRC), ProviderVmlinux
				out = append(out, p)
			}
		}
	}
	return out
}

// crcDiffers applies the CRC comparison rule of o.
func (t *Tree) crcDiffers(o ValidateOptions, needHas bool, need uint64, provHas bool, prov uint64) bool {
	if o.Kmod {
		return o.CRCs && uint32(need) != uint32(prov)
	}
	return needHas && provHas && uint32(need) != uint32(prov)
}
