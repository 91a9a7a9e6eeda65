package depmod

import (
	"fmt"
	"strings"
)

// aliasNormalize maps '-' to '_' outside [...] groups, which are copied
// verbatim. An unmatched ']' or an unterminated '[' is an error.
func aliasNormalize(alias string) (string, error) {
	if !strings.ContainsAny(alias, "-[]") {
		return alias, nil
	}
	b := make([]byte, 0, len(alias))
	for i := 0; i < len(alias); i++ {
		switch c := alias[i]; c {
		case '[':
			j := strings.IndexByte(alias[i:], ']')
			if j < 0 {
				return "", fmt.Errorf("unmatched bracket in %q", alias)
			}
			b = append(b, alias[i:i+j+1]...)
			i += j
		case ']':
			return "", fmt.Errorf("unmatched bracket in %q", alias)
		case '-':
			b = append(b, '_')
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

// isASCII reports whether s holds only 7-bit ASCII without NUL.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// parseMajorMinor parses "<prefix><major>-<minor>" (as sscanf "%u-%u"
// would, ignoring trailing text).
func parseMajorMinor(s, prefix string) (major, minor uint32, ok bool) {
	rest, found := strings.CutPrefix(s, prefix)
	if !found {
		return 0, 0, false
	}
	num := func() (uint32, bool) {
		i := 0
		var v uint64
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			v = v*10 + uint64(rest[i]-'0')
			if v > 0xffffffff {
				return 0, false
			}
			i++
		}
		if i == 0 {
			return 0, false
		}
		rest = rest[i:]
		return uint32(v), true
	}
	if major, ok = num(); !ok {
		return 0, 0, false
	}
	if !strings.HasPrefix(rest, "-") {
		return 0, 0, false
	}
	rest = rest[1:]
	if minor, ok = num(); !ok {
		return 0, 0, false
	}
	return major, minor, true
}
