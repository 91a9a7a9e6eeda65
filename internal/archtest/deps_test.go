// Package archtest holds tests of the package structure that
// docs/ARCHITECTURE.md describes: which packages may depend on which.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/wsl-modules/wsl-modules-action/"

// forbidden lists, per package, packages it must not depend on, even
// indirectly: format and source packages are libraries below the stages
// that use them.
var forbidden = map[string][]string{
	"internal/fetch":   {"internal/release", "internal/pipeline", "internal/kbuild"},
	"internal/modtree": {"internal/depmod", "internal/stage", "internal/merge", "internal/pipeline", "internal/kbuild"},
	"internal/kimage":  {"internal/modtree", "internal/pipeline"},
	"internal/kmodule": {"internal/modtree", "internal/pipeline"},
	"internal/image":   {"internal/modtree", "internal/pack", "internal/depmod", "internal/pipeline"},
	"internal/pack":    {"internal/image", "internal/merge", "internal/pipeline"},
	"internal/depmod":  {"internal/stage", "internal/merge", "internal/pipeline"},
	"internal/release": {"internal/pipeline", "internal/kbuild", "internal/modbuild"},
	"internal/symcrc":  {"internal/modbuild", "internal/pipeline"},
	"internal/intree":  {"internal/modbuild", "internal/pipeline", "internal/release"},
	"internal/csource": {"internal/symcrc", "internal/intree", "internal/kbuild", "internal/pipeline"},
}

// TestDependencies runs go list -deps on each package and fails on any
// forbidden dependency, naming it.
func TestDependencies(t *testing.T) {
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := map[string]bool{}
		for _, d := range strings.Fields(string(out)) {
			deps[strings.TrimPrefix(d, module)] = true
		}
		if !deps[pkg] {
			t.Fatalf("go list -deps %s does not list the package itself:\n%s", pkg, out)
		}
		for _, b := range bad {
			if deps[b] {
				t.Errorf("%s depends on %s", pkg, b)
			}
		}
	}
}
