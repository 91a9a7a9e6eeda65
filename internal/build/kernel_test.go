package build_test

import (
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/build/buildtest"
)

func TestKernelBuild(t *testing.T) {
	k := buildtest.TestKernel(t)
	t.Logf("kernel %s in %s", k.Meta.Release, k.Dir)
}
