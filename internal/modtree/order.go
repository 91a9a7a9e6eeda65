package modtree

import (
	"sort"
	"strings"
)

// OrderFile is the name of modules.order.
const OrderFile = "modules.order"

// ParseOrder splits the content of modules.order into its lines.
func ParseOrder(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\n")
}

// FormatOrder renders modules.order lines, each newline-terminated.
func FormatOrder(lines []string) []byte {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// AppendOrder is the one rule for adding modules to modules.order: the
// lines of old without the paths in drop, empty lines and the added paths
// themselves, then the added paths in path order, once each (as kbuild's
// modules_install lists external modules after the kernel's, and so
// depmod orders them as kmod would).
func AppendOrder(old, add []string, drop map[string]bool) []string {
	adds := append([]string(nil), add...)
	sort.Strings(adds)
	gone := map[string]bool{}
	for p := range drop {
		gone[p] = true
	}
	for _, a := range adds {
		gone[a] = true
	}
	out := make([]string, 0, len(old)+len(adds))
	for _, l := range old {
		if l != "" && !gone[l] {
			out = append(out, l)
		}
	}
	for i, a := range adds {
		if i == 0 || a != adds[i-1] {
			out = append(out, a)
		}
	}
	return out
}
