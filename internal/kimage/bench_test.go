package kimage_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// BenchmarkExports reads the test bzImage's exports and, on the same
// input in the same run, does what the reference tools need for the same
// facts: scripts/extract-vmlinux, then readelf dumping the five export
// sections. It reports the reference's time over ours ("x-faster").
func BenchmarkExports(b *testing.B) {
	k := buildtest.TestKernel(b)
	extract := filepath.Join(k.DevelDir(), "scripts", "extract-vmlinux")
	if _, err := os.Stat(extract); err != nil {
		testenv.Missing(b, "%s", extract)
	}
	readelf := testenv.Tool(b, "readelf")
	tmp := filepath.Join(b.TempDir(), "vmlinux")
	var ours, ref time.Duration
	for b.Loop() {
		t0 := time.Now()
		f, err := kimage.Open(k.Image(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Exports(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		t1 := time.Now()
		cmd := exec.Command("sh", "-c", `sh "$0" "$1" > "$2" && "$3" -W -x __ksymtab -x __ksymtab_gpl -x __kcrctab -x __kcrctab_gpl -x __ksymtab_strings "$2" > /dev/null`,
			extract, k.Image(), tmp, readelf)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("reference: %v: %s", err, out)
		}
		ours, ref = ours+t1.Sub(t0), ref+time.Since(t1)
	}
	b.ReportMetric(float64(ref)/float64(ours), "x-faster")
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ms/kimage")
	b.ReportMetric(float64(ref.Milliseconds())/float64(b.N), "ms/reference")
}
