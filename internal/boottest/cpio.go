// Package boottest boots a kernel under qemu-system-x86_64 (TCG) with a
// modules image attached read-only as a virtio disk, mounts it the way WSL's
// init does (ext4 read-only at /modules, then an overlay with a tmpfs upper
// layer on /lib/modules/$(uname -r)), modprobes a list of modules with kmod's
// real modprobe and reports what loaded. It is test support for the
// end-to-end tests.
package boottest

import (
	"fmt"
	"io"
	"sort"
)

// cpioWriter writes a "newc" (070701) cpio archive, the initramfs format.
type cpioWriter struct {
	w     io.Writer
	ino   uint32
	n     int64
	names map[string]bool
}

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLnk  = 0o120000
	modeChr  = 0o020000
	cpioPerm = 0o7777
)

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, names: map[string]bool{}}
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.n % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

// entry writes one header, name and body. rdev is (major, minor) for devices.
func (c *cpioWriter) entry(name string, mode uint32, body []byte, rmaj, rmin uint32) error {
	if c.names[name] {
		return fmt.Errorf("cpio: duplicate entry %s", name)
	}
	c.names[name] = true
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(body), 0, 0, rmaj, rmin, len(name)+1, 0)
	if err := c.write([]byte(hdr)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	if err := c.pad(); err != nil {
		return err
	}
	if err := c.write(body); err != nil {
		return err
	}
	return c.pad()
}

// close writes the trailer.
func (c *cpioWriter) close() error {
	if err := c.entry("TRAILER!!!", 0, nil, 0, 0); err != nil {
		return err
	}
	return nil
}

// tree is an in-memory initramfs description written in sorted order, with
// parent directories created implicitly.
type tree struct {
	dirs  map[string]bool
	files map[string]fileEntry
}

type fileEntry struct {
	mode       uint32
	body       []byte
	rmaj, rmin uint32
}

func newTree() *tree { return &tree{dirs: map[string]bool{}, files: map[string]fileEntry{}} }

func (t *tree) mkdirs(p string) {
	for d := parent(p); d != ""; d = parent(d) {
		t.dirs[d] = true
	}
}

func parent(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return ""
}

func (t *tree) dir(p string) { t.mkdirs(p); t.dirs[p] = true }
func (t *tree) file(p string, b []byte, m uint32) {
	t.mkdirs(p)
	t.files[p] = fileEntry{mode: modeReg | m, body: b}
}
func (t *tree) symlink(p, target string) {
	t.mkdirs(p)
	t.files[p] = fileEntry{mode: modeLnk | 0o777, body: []byte(target)}
}
func (t *tree) chardev(p string, maj, min uint32) {
	t.mkdirs(p)
	t.files[p] = fileEntry{mode: modeChr | 0o600, rmaj: maj, rmin: min}
}

// writeTo writes the tree as a newc archive.
func (t *tree) writeTo(w io.Writer) error {
	c := newCPIO(w)
	var dirs []string
	for d := range t.dirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		if err := c.entry(d, modeDir|0o755, nil, 0, 0); err != nil {
			return err
		}
	}
	var files []string
	for f := range t.files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		e := t.files[f]
		if err := c.entry(f, e.mode, e.body, e.rmaj, e.rmin); err != nil {
			return err
		}
	}
	return c.close()
}
