package image

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/sparse"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

const (
	fuzzMaxDisk    = 256 << 20 // decoded disk size cap
	fuzzMaxExtract = 16 << 20  // extract only images with less file content
	fuzzMaxAlloc   = 512 << 20 // allocations allowed per input
)

var limitOnce sync.Once

// seedImages returns encoded real images of a small tree: our VHDX, and
// with qemu-img and mke2fs a raw ext4, a VHDX and fixed and dynamic VHDs.
// Missing tools mean fewer seeds; the committed corpus in testdata/fuzz
// still applies.
func seedImages(f testing.TB) [][]byte {
	var seeds [][]byte
	src := f.TempDir()
	md := filepath.Join(src, "lib/modules/6.6.0")
	testenv.WriteFileMode(f, filepath.Join(md, "kernel/a.ko"), bytes.Repeat([]byte("module "), 700), 0o644)
	testenv.WriteFileMode(f, filepath.Join(md, "kernel/sub/b.ko"), append(bytes.Repeat([]byte("b"), 100), make([]byte, 9000)...), 0o4755)
	testenv.WriteFileMode(f, filepath.Join(md, "modules.order"), []byte("kernel/a.ko\n"), 0o644)
	os.Symlink("kernel/a.ko", filepath.Join(md, "link"))
	res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(src, "lib", "modules", "6.6.0"), Release: "6.6.0", SourceDateEpoch: sde}, filepath.Join(f.TempDir(), "m.vhdx"), nil)
	if err != nil {
		f.Fatal(err)
	}
	add := func(p string) {
		if b, err := os.ReadFile(p); err == nil {
			seeds = append(seeds, sparse.Encode(b))
		}
	}
	add(res.Path)
	mke2fs, err1 := exec.LookPath("mke2fs")
	qemu, err2 := exec.LookPath("qemu-img")
	if err1 != nil || err2 != nil {
		return seeds
	}
	dir := f.TempDir()
	raw := filepath.Join(dir, "m.img")
	if exec.Command(mke2fs, "-q", "-t", "ext4", "-b", "1024", "-O", "^has_journal", "-d", md, raw, "3M").Run() != nil {
		return seeds
	}
	add(raw)
	for i, o := range [][]string{{"-O", "vhdx"}, {"-O", "vpc", "-o", "subformat=fixed"}, {"-O", "vpc", "-o", "subformat=dynamic"}} {
		out := filepath.Join(dir, string(rune('a'+i)))
		if exec.Command(qemu, append(append([]string{"convert", "-f", "raw"}, o...), raw, out)...).Run() == nil {
			add(out)
		}
	}
	return seeds
}

// FuzzExtract detects the container of a (sparse-encoded) disk, walks its
// ext4 filesystem and extracts it. It must not panic, must keep memory
// bounded, must report only clean relative paths, and must write nothing
// outside the destination: afterwards the parent holds the complete
// destination or nothing, and the destination exactly the walked entries.
func FuzzExtract(f *testing.F) {
	for _, s := range seedImages(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		limitOnce.Do(func() { memlimit.LimitProcess(2 << 30) })
		img := sparse.Decode(in, fuzzMaxDisk)
		before := memlimit.TotalAlloc()
		d, err := openDisk(img, img.Size(), "fuzz.img")
		if err != nil {
			return
		}
		walked := map[string]fs.FileMode{}
		var content int64
		err = Walk(d, func(e Entry) error {
			if e.Path != "" && (!fs.ValidPath(e.Path) || path.Clean(e.Path) != e.Path) {
				t.Fatalf("Walk gave an unclean path %q", e.Path)
			}
			if _, dup := walked[e.Path]; dup {
				t.Fatalf("Walk gave %q twice", e.Path)
			}
			walked[e.Path] = e.Mode
			if e.Mode.IsRegular() {
				content += e.Size
			}
			return nil
		})
		if err == nil && content <= fuzzMaxExtract {
			checkExtract(t, d, walked)
		}
		if got := memlimit.TotalAlloc() - before; got > fuzzMaxAlloc {
			t.Fatalf("one input allocated %d MiB", got>>20)
		}
	})
}

// checkExtract extracts d and checks the result against the walk.
func checkExtract(t *testing.T, d *Disk, walked map[string]fs.FileMode) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "x")
	_, err := Extract(context.Background(), d, dest, false)
	ents, _ := os.ReadDir(parent)
	if err != nil {
		if len(ents) != 0 {
			t.Fatalf("failed extract (%v) left %s behind", err, ents[0].Name())
		}
		return
	}
	if len(ents) != 1 || ents[0].Name() != "x" {
		t.Fatalf("extract left %d entries in the parent", len(ents))
	}
	err = filepath.WalkDir(dest, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if _, ok := walked[rel]; !ok {
			return errors.New("extracted " + rel + ", which Walk did not report")
		}
		if fi, _ := de.Info(); fi != nil && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			return errors.New(rel + " kept a setuid or setgid bit")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(parent)
}
