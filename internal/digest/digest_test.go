package digest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestFileMatchesSha256sum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("kernel\n"), 0o644)
	got, err := File(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		t.Skip("no sha256sum")
	}
	if want := strings.Fields(string(out))[0]; got != want {
		t.Fatalf("File = %s, sha256sum says %s", got, want)
	}
}

func TestTreeChangesWithContentModeAndLinks(t *testing.T) {
	ctx := context.Background()
	mk := func() string {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, "a", ".git"), 0o755)
		os.WriteFile(filepath.Join(d, "a", "x.c"), []byte("int x;\n"), 0o644)
		os.WriteFile(filepath.Join(d, "a", ".git", "HEAD"), []byte("ref\n"), 0o644)
		os.Symlink("x.c", filepath.Join(d, "a", "l"))
		return d
	}
	base, _ := Tree(ctx, mk())
	if again, _ := Tree(ctx, mk()); again != base {
		t.Fatal("same content, different digest")
	}
	for name, change := range map[string]func(d string){
		"content": func(d string) { os.WriteFile(filepath.Join(d, "a", "x.c"), []byte("int y;\n"), 0o644) },
		"exec":    func(d string) { os.Chmod(filepath.Join(d, "a", "x.c"), 0o755) },
		"link":    func(d string) { os.Remove(filepath.Join(d, "a", "l")); os.Symlink("y.c", filepath.Join(d, "a", "l")) },
		"new dir": func(d string) { os.Mkdir(filepath.Join(d, "b"), 0o755) },
	} {
		d := mk()
		change(d)
		if got, _ := Tree(ctx, d); got == base {
			t.Errorf("%s change not detected", name)
		}
	}
	d := mk()
	os.WriteFile(filepath.Join(d, "a", ".git", "HEAD"), []byte("other\n"), 0o644)
	if got, _ := Tree(ctx, d); got != base {
		t.Error(".git content changed the digest")
	}
}

// TestFileReusesBuffers: hashing a file allocates no read buffer of its
// own (Tree hashes tens of thousands of files; io.Copy's 32 KiB buffer
// per file made 2.8 GiB of garbage for the 6.12 source).
func TestFileReusesBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, make([]byte, 1<<20), 0o644)
	if _, err := File(p); err != nil { // fills the pool
		t.Fatal(err)
	}
	const n = 20
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	for i := 0; i < n; i++ {
		if _, err := File(p); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&b)
	if per := (b.TotalAlloc - a.TotalAlloc) / n; per > 8<<10 {
		t.Errorf("File allocates %d bytes per call, want no read buffer (< 8 KiB)", per)
	}
}
