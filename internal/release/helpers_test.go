package release

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// distSpec describes a small dist directory (no real VHDX): enough for
// publishing tests, where only names, sizes and sha256s matter.
type distSpec struct {
	tag, arch, modRef string
	// salt changes the kernel image's bytes but not the manifest hash (a
	// rebuild of the same inputs that is not byte-identical).
	salt    string
	prepare func(*PrepareOptions)
}

func smallDist(t *testing.T, s distSpec) string {
	t.Helper()
	if s.tag == "" {
		s.tag = ktag
	}
	if s.arch == "" {
		s.arch = "x86_64"
	}
	if s.modRef == "" {
		s.modRef = "v0.13.2"
	}
	dir := t.TempDir()
	vhdx := []byte(strings.Repeat("vhdx "+s.tag+" "+s.arch+" "+s.modRef+"\n", 200))
	sum := sha256.Sum256(vhdx)
	m := testManifest(hex.EncodeToString(sum[:]), int64(len(vhdx)), s.modRef)
	v, ok := kver.Parse(s.tag)
	if !ok {
		t.Fatalf("bad tag %s", s.tag)
	}
	m.Kernel.Tag, m.Kernel.Source.Tag, m.Kernel.Release, m.Kernel.Arch = s.tag, s.tag, v.Release(), s.arch
	m.Kernel.ImageFile = ImageFile(&manifest.Manifest{Kernel: manifest.Kernel{Arch: s.arch}})
	os.WriteFile(filepath.Join(dir, VHDXFile), vhdx, 0o644)
	os.WriteFile(filepath.Join(dir, m.Kernel.ImageFile), []byte(strings.Repeat("kernel "+s.tag+" "+s.arch+" "+s.salt+"\n", 300)), 0o644)
	if err := m.Write(filepath.Join(dir, manifest.FileName)); err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(t.TempDir(), "logs")
	os.MkdirAll(logs, 0o755)
	os.WriteFile(filepath.Join(logs, "kernel.log"), []byte("kernel build log\n"), 0o644)
	o := PrepareOptions{Dir: dir, LogsDir: logs}
	if s.prepare != nil {
		s.prepare(&o)
	}
	if _, err := PrepareDist(o); err != nil {
		t.Fatal(err)
	}
	return dir
}

// publishWith publishes dir with client c (each concurrent run has its
// own); r.expect(dir) must have been called. Safe in any goroutine.
func (r *rig) publishWith(c *githubapi.Client, dir string) (*Result, error) {
	return Publish(ctx, c, Options{Repo: target, Dir: dir, Out: r.out, Progress: progress.New(r.out)})
}

func (r *rig) progress() *progress.Reporter { return progress.New(r.out) }
