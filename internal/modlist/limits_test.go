package modlist

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLimits: inputs built to be slow or large are refused quickly with a
// positioned error: template loops, huge files, deep nesting, alias
// expansion; an expansion over MaxExpanded fails at build time.
func TestLimits(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString("x0: &a0 [" + strings.Repeat("aaaaaaaa,", 9) + "a]\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&laughs, "x%d: &a%d [%s*a%d]\n", i, i, strings.Repeat(fmt.Sprintf("*a%d,", i-1), 9), i-1)
	}
	laughs.WriteString("modules: []\n")
	for _, tc := range []struct{ name, in, want string }{
		{"template loop", "modules:\n  - name: a\n    path: a\n    make: [\"{{range 200000000}}{{end}}\"]\n", "x.yml:4:12: modules[0].make[0]"},
		{"huge", "modules:\n" + strings.Repeat("# padding\n", MaxFileSize/10+1), "bytes; a module list may have at most"},
		{"nesting", "modules: " + strings.Repeat("[", 100000), "x.yml:1:74: nested more than 64 levels deep"},
		{"billion laughs", laughs.String(), "more than 200000 YAML nodes once its aliases are expanded"},
		{"long template", "modules:\n  - name: a\n    path: a\n    make: [\"" + strings.Repeat("x", MaxMakeArg+1) + "\"]\n", "a make argument may have at most 4096"},
		{"many args", "modules:\n  - name: a\n    path: a\n    make: [" + strings.Repeat("x,", MaxMakeArgs) + "x]\n", "modules[0].make: 257 arguments; at most 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse("x.yml", []byte(tc.in))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}

	l, err := Parse("x.yml", []byte("modules:\n  - name: a\n    path: a\n    make: [\""+strings.Repeat("{{.KernelDir}}", 10)+"\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Modules[0].MakeArgs(TemplateVars{KernelDir: strings.Repeat("d", 2000)}); err == nil ||
		!strings.Contains(err.Error(), "x.yml:4:12: modules[0].make[0]: expands to more than 16384 bytes") {
		t.Errorf("long expansion: %v", err)
	}
	args, err := l.Modules[0].MakeArgs(TemplateVars{KernelDir: "/k"})
	if err != nil || args[0] != strings.Repeat("/k", 10) {
		t.Errorf("MakeArgs = %q, %v", args, err)
	}
}
