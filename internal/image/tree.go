package image

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/image/ext4img"
)

// scanStats counts what a scanned host tree holds.
type scanStats struct {
	bytes int64
}

// scanDir builds the ext4img node tree of host directory dir (see scanFS).
func scanDir(ctx context.Context, dir, rel string, st *scanStats) (*ext4img.Node, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return scanFS(ctx, os.DirFS(dir), dir, ".", st)
}

// scanFS builds the ext4img node tree of directory p of fsys; host, when
// fsys is a host directory, lets regular files be read at offsets from
// their host paths. Device nodes, sockets, FIFOs and names containing a
// newline are refused. Symlinks are kept as links, never followed.
func scanFS(ctx context.Context, fsys fs.FS, host, p string, st *scanStats) (*ext4img.Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	where := func(name string) string {
		if host != "" {
			return filepath.Join(host, filepath.FromSlash(name))
		}
		return "/" + name
	}
	ents, err := fs.ReadDir(fsys, p)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	n := &ext4img.Node{Mode: fs.ModeDir | 0o755}
	if fi, err := fs.Stat(fsys, p); err == nil {
		n.Mode = fs.ModeDir | fi.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky)
	}
	for _, e := range ents {
		name := e.Name()
		cp := path.Join(p, name)
		if strings.ContainsAny(name, "\n\r") {
			return nil, fmt.Errorf("image: %q: file name contains a newline; refusing it", where(cp))
		}
		c, err := scanEntry(ctx, fsys, host, cp, e, st, where)
		if err != nil {
			return nil, err
		}
		c.Name = name
		n.Children = append(n.Children, c)
	}
	return n, nil
}

// scanEntry makes the node of one directory entry.
func scanEntry(ctx context.Context, fsys fs.FS, host, p string, e fs.DirEntry, st *scanStats, where func(string) string) (*ext4img.Node, error) {
	fi, err := e.Info()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	perm := fi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSetuid | fs.ModeSticky)
	switch t := fi.Mode().Type(); {
	case t == fs.ModeDir:
		return scanFS(ctx, fsys, host, p, st)
	case t == fs.ModeSymlink:
		target, err := fs.ReadLink(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if target == "" || len(target) >= ext4img.BlockSize || strings.ContainsRune(target, 0) {
			return nil, fmt.Errorf("image: %s: symlink target of %d bytes is not supported", where(p), len(target))
		}
		st.bytes += int64(len(target))
		return &ext4img.Node{Mode: fs.ModeSymlink | 0o777, Target: target}, nil
	case t == 0:
		st.bytes += fi.Size()
		if host != "" {
			return &ext4img.Node{Mode: perm, Size: fi.Size(), Source: where(p)}, nil
		}
		return &ext4img.Node{Mode: perm, Size: fi.Size(), Open: func() (io.ReadCloser, error) { return fsys.Open(p) }}, nil
	}
	return nil, fmt.Errorf("image: %s: %s is not a regular file, directory or symlink; refusing it", where(p), describeType(fi.Mode().Type()))
}

func describeType(t fs.FileMode) string {
	switch {
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	}
	return "an irregular file (" + t.String() + ")"
}

func dirNode(name string, children ...*ext4img.Node) *ext4img.Node {
	return &ext4img.Node{Name: name, Mode: fs.ModeDir | 0o755, Children: children}
}

// treeDigest hashes the structure of a tree (paths, types, modes, sizes,
// symlink targets) plus the build parameters, in sorted order. It seeds the
// ext4 UUID and hash seed; file contents are not read for it, so two trees
// that differ only in file bytes share the UUID (their images still differ).
func treeDigest(root *ext4img.Node, params string) []byte {
	h := sha256.New()
	h.Write([]byte(params))
	var walk func(n *ext4img.Node, p string)
	walk = func(n *ext4img.Node, p string) {
		var b [8]byte
		h.Write([]byte(p))
		h.Write([]byte{0})
		binary.LittleEndian.PutUint32(b[:], uint32(n.Mode))
		h.Write(b[:4])
		binary.LittleEndian.PutUint64(b[:], uint64(n.Size))
		h.Write(b[:])
		h.Write([]byte(n.Target))
		h.Write([]byte{0})
		kids := append([]*ext4img.Node(nil), n.Children...)
		sortNodes(kids)
		for _, c := range kids {
			walk(c, p+"/"+c.Name)
		}
	}
	walk(root, "")
	return h.Sum(nil)
}

func sortNodes(s []*ext4img.Node) {
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
}
