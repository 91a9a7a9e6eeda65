package image

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// compareFS opens img with OpenFS and checks that it holds exactly the
// host tree want (plus an empty lost+found): types, permission bits,
// symlink targets, and file bytes read with ReadFile on several
// goroutines, as the module-tree hub reads modules.
func compareFS(t *testing.T, want, img string) {
	t.Helper()
	fsys, err := OpenFS(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	var files []string
	seen := 0
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if p == "lost+found" {
			return fs.SkipDir
		}
		seen++
		host := filepath.Join(want, filepath.FromSlash(p))
		hi, herr := os.Lstat(host)
		fi, ferr := fsys.Lstat(p)
		if herr != nil || ferr != nil || hi.Mode() != fi.Mode() {
			t.Errorf("%s: mode %v (%v), host %v (%v)", p, fi.Mode(), ferr, hi.Mode(), herr)
			return nil
		}
		switch {
		case d.Type() == fs.ModeSymlink:
			wt, _ := os.Readlink(host)
			if gt, err := fsys.ReadLink(p); gt != wt || err != nil {
				t.Errorf("%s: target %q (%v), want %q", p, gt, err, wt)
			}
		case d.Type().IsRegular():
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	hostCount := 0
	filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != want {
			hostCount++
		}
		return err
	})
	if seen != hostCount {
		t.Errorf("the image holds %d entries, the host tree %d", seen, hostCount)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(files); i += 4 {
				got, err := fsys.ReadFile(files[i])
				host, _ := os.ReadFile(filepath.Join(want, filepath.FromSlash(files[i])))
				if err != nil || !bytes.Equal(got, host) {
					t.Errorf("%s: content differs (%v)", files[i], err)
				}
			}
		}(w)
	}
	wg.Wait()
}

// TestStockLikeVHD reads the Debian tree from an image made the way WSL's
// stock modules.vhd is (mke2fs -d with 1 KiB blocks, htree directories and
// metadata_csum, as a dynamic VHD from qemu-img) through OpenFS.
func TestStockLikeVHD(t *testing.T) {
	root, rel := testenv.DebianModules(t)
	md := filepath.Join(root, "lib", "modules", rel)
	dir := t.TempDir()
	raw := filepath.Join(dir, "modules.img")
	cmd := exec.Command(testenv.Tool(t, "mke2fs"), "-q", "-t", "ext4", "-b", "1024", "-O", "metadata_csum,dir_index", "-E", "root_owner=0:0", "-d", md, raw, "600M")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	// e2fsck -D indexes every multi-block directory (htree), as a
	// filesystem that was mounted and written would have them.
	if out, err := exec.Command(testenv.Tool(t, "e2fsck"), "-fyD", raw).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
	}
	if out := testenv.Run(t, "debugfs", "-R", "htree /kernel/net/netfilter", raw); !strings.Contains(out, "Root node dump") {
		t.Fatalf("no hashed directory:\n%.300s", out)
	}
	testenv.Run(t, "e2fsck", "-fn", raw)
	vhd := filepath.Join(dir, "modules.vhd")
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw, vhd)
	os.Remove(raw)
	fsys, err := OpenFS(vhd)
	if err != nil {
		t.Fatal(err)
	}
	if fsys.Format != "vhd-dynamic" {
		t.Errorf("format %s", fsys.Format)
	}
	fsys.Close()
	compareFS(t, md, vhd)
}
