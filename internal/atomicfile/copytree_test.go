package atomicfile

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tree makes a source tree with files, modes, a subdirectory, a relative
// and an escaping symlink, and a FIFO.
func tree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	for _, d := range []string{"a/b", "ro"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, mode := range map[string]os.FileMode{"top.txt": 0o644, "a/run.sh": 0o755, "a/b/data": 0o600, "ro/f": 0o444} {
		if err := os.WriteFile(filepath.Join(src, p), []byte("content of "+p), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(src, p), mode)
	}
	os.Chmod(filepath.Join(src, "ro"), 0o555)
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "ro"), 0o755) })
	os.Symlink("b/data", filepath.Join(src, "a", "rel"))
	return src
}

func TestCopyTreeKeepsContentModesAndLinks(t *testing.T) {
	src := tree(t)
	dst := filepath.Join(t.TempDir(), "dst")
	if err := CopyTree(context.Background(), src, dst, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "ro"), 0o755) })
	// GNU diff compares contents and link targets.
	if out, err := exec.Command("diff", "-r", "--no-dereference", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, out)
	}
	for p, want := range map[string]os.FileMode{"top.txt": 0o644, "a/run.sh": 0o755, "a/b/data": 0o600, "ro/f": 0o444, "ro": fs.ModeDir | 0o555} {
		st, err := os.Lstat(filepath.Join(dst, p))
		if err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v, %v; want %v", p, st.Mode(), err, want)
		}
	}
	if tgt, err := os.Readlink(filepath.Join(dst, "a", "rel")); err != nil || tgt != "b/data" {
		t.Errorf("link: %q, %v", tgt, err)
	}
}

func TestCopyTreePolicies(t *testing.T) {
	ctx := context.Background()
	src := tree(t)
	if err := CopyTree(ctx, src, filepath.Join(t.TempDir(), "x"), CopyOptions{Links: LinksRefuse}); err == nil || !strings.Contains(err.Error(), "a/rel is a symbolic link") {
		t.Errorf("LinksRefuse: %v", err)
	}
	d := filepath.Join(t.TempDir(), "skip")
	if err := CopyTree(ctx, src, d, CopyOptions{Links: LinksSkip, Skip: func(p string, _ fs.DirEntry) bool { return p == "ro" }}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a/rel", "ro"} {
		if _, err := os.Lstat(filepath.Join(d, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s copied (%v)", p, err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CopyTree(ctx, src, filepath.Join(t.TempDir(), "y"), CopyOptions{}); err == nil || !strings.Contains(err.Error(), "fifo: not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	if err := CopyTree(ctx, src, filepath.Join(t.TempDir(), "z"), CopyOptions{Irregular: IrregularSkip}); err != nil {
		t.Errorf("IrregularSkip: %v", err)
	}
}

// Merging adds files to an existing tree and refuses to overwrite a file,
// to replace a directory with a file, or to write through a link.
func TestCopyTreeMerge(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dst := filepath.Join(base, "dst")
	os.MkdirAll(filepath.Join(dst, "a"), 0o755)
	os.WriteFile(filepath.Join(dst, "a", "old"), []byte("old"), 0o644)
	add := filepath.Join(base, "add")
	os.MkdirAll(filepath.Join(add, "a"), 0o755)
	os.WriteFile(filepath.Join(add, "a", "new"), []byte("new"), 0o644)
	if err := CopyTree(ctx, add, dst, CopyOptions{Merge: true}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a/old", "a/new"} {
		if _, err := os.Stat(filepath.Join(dst, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := CopyTree(ctx, add, dst, CopyOptions{Merge: true}); err == nil || !strings.Contains(err.Error(), "a/new") {
		t.Errorf("second merge of the same file: %v", err)
	}
	// A destination directory replaced by a link to a victim directory:
	// the merge must not write into the victim.
	victim := filepath.Join(base, "victim")
	os.MkdirAll(victim, 0o755)
	os.RemoveAll(filepath.Join(dst, "a"))
	os.Symlink(victim, filepath.Join(dst, "a"))
	os.Remove(filepath.Join(add, "a", "new"))
	os.WriteFile(filepath.Join(add, "a", "evil"), []byte("x"), 0o644)
	if err := CopyTree(ctx, add, dst, CopyOptions{Merge: true}); err == nil {
		t.Error("merge through a link: no error")
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Errorf("the merge wrote into the link's target: %v", ents)
	}
}

func TestCopyTreeHardLinks(t *testing.T) {
	src := tree(t)
	dst := filepath.Join(t.TempDir(), "dst")
	if err := CopyTree(context.Background(), src, dst, CopyOptions{HardLink: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "ro"), 0o755) })
	a, _ := os.Stat(filepath.Join(src, "a", "run.sh"))
	b, _ := os.Stat(filepath.Join(dst, "a", "run.sh"))
	if !os.SameFile(a, b) {
		t.Error("not hard-linked on the same file system")
	}
}

func TestCopyTreeCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := CopyTree(ctx, tree(t), filepath.Join(t.TempDir(), "c"), CopyOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v", err)
	}
}

// TestCopyTreeTimes: with Times, files and directories keep their
// modification times (make must find a copied object tree up to date);
// without, they get the time of the copy.
func TestCopyTreeTimes(t *testing.T) {
	src := t.TempDir()
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "d", "f.o"), []byte("x"), 0o644)
	for _, p := range []string{"d/f.o", "d"} {
		if err := os.Chtimes(filepath.Join(src, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
	for _, keep := range []bool{true, false} {
		dst := filepath.Join(t.TempDir(), "copy")
		if err := CopyTree(context.Background(), src, dst, CopyOptions{Times: keep}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"d/f.o", "d"} {
			st, err := os.Stat(filepath.Join(dst, p))
			if err != nil {
				t.Fatal(err)
			}
			if st.ModTime().Equal(old) != keep {
				t.Errorf("Times %v: %s has mtime %v", keep, p, st.ModTime())
			}
		}
	}
}
