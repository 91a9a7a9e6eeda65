package modbuild

import (
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
)

func TestModuleEnvCross(t *testing.T) {
	// The kernel make line carries the cross variables.
	tc, _ := kbuild.ToolchainFor("arm64", "amd64")
	env := moduleEnv(tc, []string{"/a/Module.symvers", "/b/Module.symvers"})
	joined := strings.Join(env, "\n")
	for _, want := range []string{"ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "KBUILD_EXTRA_SYMBOLS=/a/Module.symvers /b/Module.symvers", "LC_ALL=C"} {
		if !strings.Contains(joined, want+"\n") && !strings.HasSuffix(joined, want) {
			t.Errorf("module env lacks %s", want)
		}
	}
}
