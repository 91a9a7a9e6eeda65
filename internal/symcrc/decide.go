package symcrc

import (
	"maps"
	"slices"
	"strings"
)

// source is one candidate file's answer for a symbol.
type source struct {
	file string
	kind string
	crc  uint32 // 0: exported without a version
}

// kindRank orders candidates: the file built into vmlinux by its
// directory's Makefile first, then one built into a module, then one
// that config does not build (an #included .c, or a Makefile reached
// only through a directory this config skips).
var kindRank = map[string]int{"vmlinux": 0, "module": 1}

// decide fills the report from the files' results.
func (r *Report) decide(want map[string]uint32, cands map[string][]string, results map[string]*fileResult, logf func(string, ...any)) {
	failed := map[string][]string{}
	for _, sym := range slices.Sorted(maps.Keys(cands)) {
		stock := want[sym]
		found, broken := answers(sym, cands[sym], results)
		best := preferred(found)
		if len(best) == 0 || (len(broken) > 0 && rank(best[0].kind) != 0 && !agree(best, stock)) {
			// No answer, or only answers that a file which could not be
			// processed might overrule.
			if len(broken) > 0 {
				for _, f := range broken {
					failed[f] = append(failed[f], sym)
				}
				continue
			}
			r.Mismatches = append(r.Mismatches, Mismatch{Symbol: sym, File: cands[sym][0], Stock: stock,
				Kind: NotExported, Candidates: cands[sym]})
			continue
		}
		if len(best) > 1 && !sameCRC(best) {
			logf("symcrc: note: %s is exported by several files with different CRCs: %s", sym, describe(best))
		}
		if m, ok := match(best, stock); ok {
			r.Checked = append(r.Checked, Checked{Symbol: sym, File: m.file, CRC: m.crc})
			continue
		}
		r.Mismatches = append(r.Mismatches, Mismatch{Symbol: sym, File: best[0].file, Stock: stock, Source: best[0].crc})
	}
	for _, f := range keys(setOf(failed)) {
		res := results[f]
		r.Failed = append(r.Failed, Failure{File: f, Symbols: failed[f], Err: res.err})
	}
}

// answers returns the candidates that export sym (with a CRC, or an
// assembly export without one) and the candidates that failed.
func answers(sym string, files []string, results map[string]*fileResult) (found []source, broken []string) {
	for _, f := range files {
		res := results[f]
		switch {
		case res == nil:
			// A .S file whose stem has a .c: kbuild never builds it.
		case res.err != nil:
			broken = append(broken, f)
		default:
			if crc, ok := res.crcs[sym]; ok {
				found = append(found, source{file: f, kind: res.kind, crc: crc})
			} else if res.asmExports[sym] {
				found = append(found, source{file: f, kind: res.kind})
			}
		}
	}
	return found, broken
}

// preferred returns the answers of the best-ranked kind.
func preferred(found []source) []source {
	best := -1
	for _, s := range found {
		if k := rank(s.kind); best < 0 || k < best {
			best = k
		}
	}
	var out []source
	for _, s := range found {
		if rank(s.kind) == best {
			out = append(out, s)
		}
	}
	return out
}

func rank(kind string) int {
	if k, ok := kindRank[kind]; ok {
		return k
	}
	return 2
}

// match returns the answer equal to stock, if any.
func match(best []source, stock uint32) (source, bool) {
	for _, s := range best {
		if s.crc == stock {
			return s, true
		}
	}
	return source{}, false
}

func agree(best []source, stock uint32) bool { _, ok := match(best, stock); return ok }

func sameCRC(best []source) bool {
	for _, s := range best[1:] {
		if s.crc != best[0].crc {
			return false
		}
	}
	return true
}

func describe(best []source) string {
	var parts []string
	for _, s := range best {
		parts = append(parts, s.file+" "+hex32(s.crc))
	}
	return strings.Join(parts, ", ")
}

func hex32(v uint32) string {
	const digits = "0123456789abcdef"
	b := []byte("0x00000000")
	for i := 9; i >= 2; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}

func setOf(m map[string][]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
