package kbuild

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestToolchainFor(t *testing.T) {
	for _, tc := range []struct {
		arch, host string
		want       Toolchain
	}{
		{"x86_64", "amd64", Toolchain{CC: "gcc", SrcArch: "x86", ImageFile: "bzImage", UnameArch: "x86_64"}},
		{"arm64", "amd64", Toolchain{MakeVars: []string{"ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"},
			CC: "aarch64-linux-gnu-gcc", CrossCompile: "aarch64-linux-gnu-", SrcArch: "arm64", ImageFile: "Image", UnameArch: "aarch64"}},
		{"arm64", "arm64", Toolchain{MakeVars: []string{"ARCH=arm64"}, CC: "gcc", SrcArch: "arm64", ImageFile: "Image", UnameArch: "aarch64"}},
		{"x86_64", "arm64", Toolchain{MakeVars: []string{"ARCH=x86_64", "CROSS_COMPILE=x86_64-linux-gnu-"},
			CC: "x86_64-linux-gnu-gcc", CrossCompile: "x86_64-linux-gnu-", SrcArch: "x86", ImageFile: "bzImage", UnameArch: "x86_64"}},
	} {
		got, err := ToolchainFor(tc.arch, tc.host)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ToolchainFor(%s, %s) = %+v, %v; want %+v", tc.arch, tc.host, got, err, tc.want)
		}
	}
	if _, err := ToolchainFor("mips", "amd64"); err == nil || !strings.Contains(err.Error(), `unknown architecture "mips"`) {
		t.Errorf("mips: %v", err)
	}
}

func TestKernelEnvReproducible(t *testing.T) {
	ts := mustTime(t, "2025-06-05T18:30:46Z")
	env := strings.Join(kernelEnv(ts), "\n") + "\n"
	for _, want := range []string{"KBUILD_BUILD_TIMESTAMP=Thu Jun  5 18:30:46 UTC 2025\n", "KBUILD_BUILD_USER=" + KBuildUser + "\n",
		"KBUILD_BUILD_HOST=" + KBuildHost + "\n", "SOURCE_DATE_EPOCH=1749148246\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("kernel env lacks %q", want)
		}
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}
