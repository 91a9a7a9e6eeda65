package image

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/image/ext4img"
)

// scanStats counts what a scanned host tree holds.
type scanStats struct {
	bytes int64
}

// scanDir builds the ext4img node tree of host directory dir. rel is the
// path shown in errors. Device nodes, sockets, FIFOs and names containing
// a newline are refused.
func scanDir(ctx context.Context, dir, rel string, st *scanStats) (*ext4img.Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	n := &ext4img.Node{Mode: fs.ModeDir | 0o755}
	if fi, err := os.Stat(dir); err == nil {
		n.Mode = fs.ModeDir | fi.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky)
	}
	for _, e := range ents {
		name := e.Name()
		hp := filepath.Join(dir, name)
		if strings.ContainsAny(name, "\n\r") {
			return nil, fmt.Errorf("image: %q: file name contains a newline; refusing it", hp)
		}
		fi, err := os.Lstat(hp)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		perm := fi.Mode() & (fs.ModePerm | fs.ModeSetgid | fs.ModeSetuid | fs.ModeSticky)
		var c *ext4img.Node
		switch t := fi.Mode().Type(); {
		case t == fs.ModeDir:
			c, err = scanDir(ctx, hp, rel+"/"+name, st)
			if err != nil {
				return nil, err
			}
		case t == fs.ModeSymlink:
			target, err := os.Readlink(hp)
			if err != nil {
				return nil, fmt.Errorf("image: %w", err)
			}
			if target == "" || len(target) >= ext4img.BlockSize || strings.ContainsRune(target, 0) {
				return nil, fmt.Errorf("image: %s: symlink target of %d bytes is not supported", hp, len(target))
			}
			c = &ext4img.Node{Mode: fs.ModeSymlink | 0o777, Target: target}
			st.bytes += int64(len(target))
		case t == 0:
			c = &ext4img.Node{Mode: perm, Size: fi.Size(), Source: hp}
			st.bytes += fi.Size()
		default:
			return nil, fmt.Errorf("image: %s: %s is not a regular file, directory or symlink; refusing it", hp, describeType(t))
		}
		c.Name = name
		n.Children = append(n.Children, c)
	}
	return n, nil
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
