package atomicfile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// names lists the entries of dir, sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// only fails unless dir holds exactly the given entries (no temporary
// files left behind).
func only(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := names(t, dir)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCreateCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.bin")
	f, err := Create(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	// Nothing at the destination before Commit.
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("destination exists before Commit: %v", err)
	}
	if filepath.Dir(f.Name()) != dir {
		t.Errorf("temporary file %s not in the destination directory %s", f.Name(), dir)
	}
	if err := f.Commit(0o640); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, p); got != "hello" {
		t.Errorf("content %q, want %q", got, "hello")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	only(t, dir, "out.bin")
	// A second Commit is an error; Abort after Commit changes nothing.
	if err := f.Commit(0o644); err == nil {
		t.Error("second Commit succeeded")
	}
	f.Abort()
	if got := readString(t, p); got != "hello" {
		t.Errorf("after Abort: content %q", got)
	}
	only(t, dir, "out.bin")
}

func TestCreateModes(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o600, 0o644, 0o755, 0o444} {
		p := filepath.Join(dir, mode.String())
		f, err := Create(p, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Commit(mode); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
		}
	}
}

func TestCreateExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Create(p, false)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Create over existing file = %v, want ErrExists naming %s", err, p)
	}
	// A dangling symlink is an existing path too.
	l := filepath.Join(dir, "link")
	if err := os.Symlink("nowhere", l); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(l, false); !errors.Is(err, ErrExists) {
		t.Errorf("Create over dangling symlink = %v, want ErrExists", err)
	}
	only(t, dir, "link", "out")
	if got := readString(t, p); got != "old" {
		t.Errorf("existing file changed: %q", got)
	}

	// With force the file is replaced, but only on Commit.
	f, err := Create(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("new"); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, p); got != "old" {
		t.Errorf("existing file changed before Commit: %q", got)
	}
	if err := f.Commit(0o600); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, p); got != "new" {
		t.Errorf("content %q, want new", got)
	}
	only(t, dir, "link", "out")
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	f, err := Create(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("partial"); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	only(t, dir)
	f.Abort() // twice is harmless
	if err := f.Commit(0o644); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	only(t, dir)

	// Abort with force keeps the existing file untouched.
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err = Create(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("new"); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	only(t, dir, "out")
	if got := readString(t, p); got != "old" {
		t.Errorf("existing file changed by an aborted write: %q", got)
	}
}

func TestCreateBadDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		filepath.Join(dir, "missing", "out"),
		filepath.Join(file, "out"),
	} {
		for _, force := range []bool{false, true} {
			f, err := Create(p, force)
			if err == nil {
				f.Abort()
				t.Errorf("Create(%s, %v) succeeded", p, force)
				continue
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("Create(%s, %v) = %q, does not name the path", p, force, err)
			}
		}
	}
	only(t, dir, "file")
}

// TestCommitOntoDirectory: a failing rename (the destination is a
// non-empty directory) is reported with the path and removes the
// temporary file.
func TestCommitOntoDirectory(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	err = f.Commit(0o644)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Commit onto a directory = %v, want an error naming %s", err, p)
	}
	only(t, dir, "out")
	only(t, p, "sub")
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "w")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, p); got != "two" {
		t.Errorf("content %q, want two", got)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	only(t, dir, "w")
	bad := filepath.Join(dir, "missing", "w")
	if err := WriteFile(bad, []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("WriteFile in a missing directory = %v, want an error naming %s", err, bad)
	}
	only(t, dir, "w")
}

func fill(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCreateDir(t *testing.T) {
	parent := t.TempDir()
	p := filepath.Join(parent, "tree")
	d, err := CreateDir(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Abort()
	if filepath.Dir(d.Tmp) != parent {
		t.Errorf("temporary directory %s not next to %s", d.Tmp, p)
	}
	fill(t, d.Tmp, "a/b.txt", "b")
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("destination exists before Commit: %v", err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, filepath.Join(p, "a", "b.txt")); got != "b" {
		t.Errorf("content %q", got)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, want 0755", st.Mode().Perm())
	}
	only(t, parent, "tree")
	if err := d.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}
	d.Abort()
	only(t, parent, "tree")

	// Without force an existing directory is refused.
	if _, err := CreateDir(p, false); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), p) {
		t.Errorf("CreateDir over existing = %v, want ErrExists naming %s", err, p)
	}

	// With force it is replaced as a whole on Commit: nothing of the old
	// tree survives.
	d, err = CreateDir(p, true)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d.Tmp, "c.txt", "c")
	if got := readString(t, filepath.Join(p, "a", "b.txt")); got != "b" {
		t.Errorf("old tree changed before Commit: %q", got)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	only(t, p, "c.txt")
	only(t, parent, "tree")
}

func TestCreateDirAbort(t *testing.T) {
	parent := t.TempDir()
	p := filepath.Join(parent, "tree")
	fill(t, p, "old.txt", "old")
	d, err := CreateDir(p, true)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d.Tmp, "new.txt", "new")
	d.Abort()
	only(t, parent, "tree")
	only(t, p, "old.txt")
	if err := d.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	only(t, parent, "tree")
}

func TestCreateDirBadParent(t *testing.T) {
	parent := t.TempDir()
	file := filepath.Join(parent, "file")
	fill(t, parent, "file", "")
	p := filepath.Join(file, "tree")
	if d, err := CreateDir(p, true); err == nil {
		d.Abort()
		t.Fatal("CreateDir under a regular file succeeded")
	} else if !strings.Contains(err.Error(), p) {
		t.Errorf("error %q does not name %s", err, p)
	}
	only(t, parent, "file")
}

// TestCreateDirCommitFails: when the existing directory cannot be
// replaced (it is immutable), Commit fails naming the path, keeps the old
// tree intact and removes the temporary one.
func TestCreateDirCommitFails(t *testing.T) {
	chattr := testenv.Tool(t, "chattr")
	parent := t.TempDir()
	p := filepath.Join(parent, "tree")
	fill(t, p, "old.txt", "old")
	d, err := CreateDir(p, true)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d.Tmp, "new.txt", "new")
	if out, err := exec.Command(chattr, "+i", p).CombinedOutput(); err != nil {
		t.Skipf("chattr +i not supported here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(chattr, "-i", p).Run() })
	err = d.Commit()
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Commit over an immutable directory = %v, want an error naming %s", err, p)
	}
	only(t, parent, "tree")
	only(t, p, "old.txt")
	if got := readString(t, filepath.Join(p, "old.txt")); got != "old" {
		t.Errorf("old tree changed: %q", got)
	}
}

// TestCommitNoForceRace: without force, a destination that appears between
// Create and Commit is not replaced.
func TestCommitNoForceRace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	f, err := Create(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("ours"); err != nil {
		t.Fatal(err)
	}
	fill(t, dir, "out", "theirs")
	if err := f.Commit(0o644); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Commit = %v, want ErrExists naming %s", err, p)
	}
	if got := readString(t, p); got != "theirs" {
		t.Errorf("existing file replaced: %q", got)
	}
	only(t, dir, "out")

	// The same for a directory (an empty one could be replaced by rename).
	q := filepath.Join(dir, "tree")
	d, err := CreateDir(q, false)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d.Tmp, "ours", "")
	if err := os.Mkdir(q, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), q) {
		t.Fatalf("Dir.Commit = %v, want ErrExists naming %s", err, q)
	}
	only(t, dir, "out", "tree")
	only(t, q)
}

// TestCopyFile copies with the source's mode or a given one, creates
// parents, replaces an existing file and leaves no temp file on failure.
func TestCopyFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("module"), 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chmod(src, 0o750)
	dst := filepath.Join(dir, "a", "b", "dst")
	if err := CopyFile(src, dst, 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "module" {
		t.Fatalf("content %q", b)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o750 {
		t.Fatalf("mode %v, want the source's 0750", st.Mode().Perm())
	}
	os.WriteFile(src, []byte("v2"), 0o750)
	if err := CopyFile(src, dst, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "v2" {
		t.Fatalf("not replaced: %q", b)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode().Perm())
	}
	if err := CopyFile(filepath.Join(dir, "missing"), filepath.Join(dir, "a", "x"), 0); err == nil {
		t.Fatal("copying a missing file succeeded")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "a", "b"))
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}
