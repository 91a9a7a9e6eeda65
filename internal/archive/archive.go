// Package archive unpacks tar archives (plain, gzip, xz or zstd, detected
// from magic bytes) safely: entries with absolute paths or "..", symlinks or
// hard links that point outside the tree, and device nodes are refused, and
// all writes go through an os.Root so nothing can escape the destination.
// The tree is unpacked into a temporary directory and renamed into place only
// when the whole archive was read, so a failure (a bad entry, a truncated or
// dropped stream) leaves nothing behind.
package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// ErrUnsafe is wrapped by errors for entries that would escape the tree.
var ErrUnsafe = errors.New("unsafe archive entry")

// Options control Extract.
type Options struct {
	// StripComponents removes this many leading path components from every
	// entry (like tar --strip-components). Entries with fewer components
	// are skipped.
	StripComponents int
	// Force replaces an existing destination.
	Force bool
	// Name is used in error messages (for example the URL or file name).
	Name string
}

// Result describes an unpacked archive.
type Result struct {
	// TopDir is the single top-level directory name of the archive before
	// stripping, or "" if there was none.
	TopDir string
	// Files, Dirs and Links count the entries written.
	Files, Dirs, Links int
	// Bytes is the total size of regular files.
	Bytes int64
}

// Decompress returns a reader of the tar stream in r, which may be gzip, xz,
// zstd or uncompressed, detected from magic bytes.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1F, 0x8B}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0xFD, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xB5, 0x2F, 0xFD}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// ExtractFile unpacks the archive file at src into dest.
func ExtractFile(ctx context.Context, src, dest string, o Options) (*Result, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer f.Close()
	if o.Name == "" {
		o.Name = src
	}
	return Extract(ctx, f, dest, o)
}

// Extract unpacks the (possibly compressed) tar stream r into the directory
// dest, atomically.
func Extract(ctx context.Context, r io.Reader, dest string, o Options) (*Result, error) {
	name := o.Name
	if name == "" {
		name = "archive"
	}
	d, err := atomicfile.CreateDir(dest, o.Force)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer d.Abort()
	res, err := unpack(ctx, r, d.Tmp, o)
	if err != nil {
		return nil, fmt.Errorf("archive: %s: %w", name, err)
	}
	if err := d.Commit(); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return res, nil
}

type dirTime struct {
	name  string
	mtime time.Time
}

func unpack(ctx context.Context, r io.Reader, dir string, o Options) (*Result, error) {
	dr, err := Decompress(r)
	if err != nil {
		return nil, err
	}
	defer dr.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	res := &Result{}
	top, topSet := "", false
	var dirTimes []dirTime
	tr := tar.NewReader(dr)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading tar: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		clean, err := checkName(h.Name)
		if err != nil {
			return nil, err
		}
		first, _, _ := strings.Cut(clean, "/")
		if !topSet {
			top, topSet = first, true
		} else if top != first {
			top = ""
		}
		rel := stripComponents(clean, o.StripComponents)
		if rel == "" {
			continue
		}
		mode := os.FileMode(h.Mode).Perm() | os.FileMode(h.Mode)&(os.ModeSetgid|os.ModeSticky)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o755); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			if err := root.Chmod(rel, mode|0o700); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			dirTimes = append(dirTimes, dirTime{rel, h.ModTime})
			res.Dirs++
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA appears in old archives
			if err := mkParent(root, rel); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			n, err := io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			if err := root.Chmod(rel, mode); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			if err := root.Chtimes(rel, h.ModTime, h.ModTime); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			res.Files++
			res.Bytes += n
		case tar.TypeSymlink:
			if err := checkLinkTarget(root, rel, h.Linkname); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			if err := mkParent(root, rel); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			if err := root.Symlink(h.Linkname, rel); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			res.Links++
		case tar.TypeLink:
			target, err := checkName(h.Linkname)
			if err != nil {
				return nil, fmt.Errorf("%s: hard link: %w", h.Name, err)
			}
			target = stripComponents(target, o.StripComponents)
			if target == "" {
				return nil, fmt.Errorf("%s: hard link target %q is outside the unpacked tree: %w", h.Name, h.Linkname, ErrUnsafe)
			}
			if err := mkParent(root, rel); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			if err := root.Link(target, rel); err != nil {
				return nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			res.Links++
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return nil, fmt.Errorf("%s: device or fifo entries are not allowed: %w", h.Name, ErrUnsafe)
		default:
			// Other types (PAX headers are consumed by archive/tar) are ignored.
		}
	}
	for i := len(dirTimes) - 1; i >= 0; i-- {
		_ = root.Chtimes(dirTimes[i].name, dirTimes[i].mtime, dirTimes[i].mtime)
	}
	res.TopDir = top
	return res, nil
}

// checkName validates an entry name and returns it cleaned, without a
// leading "./" or trailing "/".
func checkName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty entry name: %w", ErrUnsafe)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") && strings.HasPrefix(strings.ReplaceAll(name, "\\", "/"), "/") {
		return "", fmt.Errorf("%s: absolute path: %w", name, ErrUnsafe)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%s: path contains '..': %w", name, ErrUnsafe)
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%q: NUL in name: %w", name, ErrUnsafe)
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// checkLinkTarget refuses absolute symlink targets and targets that leave
// the tree when resolved from the link's directory, following the symlinks
// already unpacked.
func checkLinkTarget(root *os.Root, rel, target string) error {
	if target == "" {
		return fmt.Errorf("empty symlink target: %w", ErrUnsafe)
	}
	if path.IsAbs(target) {
		return fmt.Errorf("symlink to absolute path %q: %w", target, ErrUnsafe)
	}
	var stack []string
	if d := path.Dir(rel); d != "." {
		stack = strings.Split(d, "/")
	}
	hops := 0
	var walk func(p string) error
	walk = func(p string) error {
		for _, c := range strings.Split(p, "/") {
			switch c {
			case "", ".":
				continue
			case "..":
				if len(stack) == 0 {
					return fmt.Errorf("symlink target %q points outside the tree: %w", target, ErrUnsafe)
				}
				stack = stack[:len(stack)-1]
				continue
			}
			stack = append(stack, c)
			cur := strings.Join(stack, "/")
			fi, err := root.Lstat(cur)
			if err != nil || fi.Mode()&os.ModeSymlink == 0 {
				continue
			}
			if hops++; hops > 40 {
				return fmt.Errorf("symlink target %q: too many levels of links: %w", target, ErrUnsafe)
			}
			next, err := root.Readlink(cur)
			if err != nil {
				return err
			}
			if path.IsAbs(next) {
				return fmt.Errorf("symlink target %q goes through absolute link %s: %w", target, cur, ErrUnsafe)
			}
			stack = stack[:len(stack)-1]
			if err := walk(next); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(target)
}

func stripComponents(p string, n int) string {
	if p == "" {
		return ""
	}
	for i := 0; i < n; i++ {
		_, rest, ok := strings.Cut(p, "/")
		if !ok {
			return ""
		}
		p = rest
	}
	return p
}

func mkParent(root *os.Root, rel string) error {
	if d := path.Dir(rel); d != "." {
		return root.MkdirAll(d, 0o755)
	}
	return nil
}
