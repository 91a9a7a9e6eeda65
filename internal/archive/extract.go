package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"
)

type dirTime struct {
	name  string
	mtime time.Time
}

// extractor holds the state of one unpack: the root the tree is written
// through, the directories whose times are set at the end, and the
// symlinks created (by the path they really have, no link on the way),
// which are checked again once the whole tree is there.
type extractor struct {
	root     *os.Root
	o        Options
	res      Result
	dirTimes []dirTime
	links    []string
}

func unpack(ctx context.Context, r io.Reader, dir string, o Options) (*Result, error) {
	dr, err := Decompress(r)
	if err != nil {
		return nil, err
	}
	defer dr.Close()
	var stream io.Reader = dr
	if o.MaxBytes > 0 {
		stream = &limitReader{r: dr, max: o.MaxBytes}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	e := &extractor{root: root, o: o}
	top, topSet := "", false
	tr := tar.NewReader(stream)
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
		if err := e.entry(h, rel, tr); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	if err := e.verifyLinks(); err != nil {
		return nil, err
	}
	for i := len(e.dirTimes) - 1; i >= 0; i-- {
		_ = root.Chtimes(e.dirTimes[i].name, e.dirTimes[i].mtime, e.dirTimes[i].mtime)
	}
	e.res.TopDir = top
	return &e.res, nil
}

// entry writes one tar entry at rel (already checked and stripped).
func (e *extractor) entry(h *tar.Header, rel string, tr io.Reader) error {
	mode := os.FileMode(h.Mode).Perm() | os.FileMode(h.Mode)&(os.ModeSetgid|os.ModeSticky)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := e.root.MkdirAll(rel, 0o755); err != nil {
			return err
		}
		if err := e.root.Chmod(rel, mode|0o700); err != nil {
			return err
		}
		e.dirTimes = append(e.dirTimes, dirTime{rel, h.ModTime})
		e.res.Dirs++
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA appears in old archives
		// The declared size counts, not the bytes in the stream: the
		// holes of a sparse entry take none.
		if e.o.MaxBytes > 0 && h.Size > e.o.MaxBytes-e.res.Bytes {
			return fmt.Errorf("%d bytes of files would be more than the limit of %d: %w", e.res.Bytes+h.Size, e.o.MaxBytes, ErrTooLarge)
		}
		n, err := e.file(rel, tr, mode, h.ModTime)
		if err != nil {
			return err
		}
		e.res.Files++
		e.res.Bytes += n
	case tar.TypeSymlink:
		if err := e.symlink(rel, h.Linkname); err != nil {
			return err
		}
		e.res.Links++
	case tar.TypeLink:
		if err := e.hardLink(rel, h.Linkname); err != nil {
			return err
		}
		e.res.Links++
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return fmt.Errorf("device or fifo entries are not allowed: %w", ErrUnsafe)
	default:
		// Other types (PAX headers are consumed by archive/tar) are ignored.
	}
	return nil
}

// file writes a regular file's contents.
func (e *extractor) file(rel string, r io.Reader, mode os.FileMode, mtime time.Time) (int64, error) {
	if err := mkParent(e.root, rel); err != nil {
		return 0, err
	}
	f, err := e.root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	if err := e.root.Chmod(rel, mode); err != nil {
		return n, err
	}
	return n, e.root.Chtimes(rel, mtime, mtime)
}

// symlink creates the link rel -> target after checking, from the
// directory rel really lands in, that target stays inside the tree.
func (e *extractor) symlink(rel, target string) error {
	real, err := realPath(e.root, rel)
	if err != nil {
		return err
	}
	if err := checkLinkTarget(e.root, real, target); err != nil {
		return err
	}
	if err := mkParent(e.root, real); err != nil {
		return err
	}
	if err := e.root.Symlink(target, real); err != nil {
		return err
	}
	e.links = append(e.links, real)
	return nil
}

// hardLink links rel to the earlier entry linkname, which must be a
// regular file: a hard link to a symlink would be a copy of the link in
// another directory, where its relative target can mean something else.
func (e *extractor) hardLink(rel, linkname string) error {
	target, err := checkName(linkname)
	if err != nil {
		return fmt.Errorf("hard link: %w", err)
	}
	target = stripComponents(target, e.o.StripComponents)
	if target == "" {
		return fmt.Errorf("hard link target %q is outside the unpacked tree: %w", linkname, ErrUnsafe)
	}
	fi, err := e.root.Lstat(target)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("hard link to the symlink %q: %w", linkname, ErrUnsafe)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hard link target %q is not a regular file: %w", linkname, ErrUnsafe)
	}
	if err := mkParent(e.root, rel); err != nil {
		return err
	}
	return e.root.Link(target, rel)
}

// verifyLinks checks every symlink again against the finished tree: a
// link that was inside when it was made can point outside once a later
// entry turns a directory it goes through into a link (l -> b/c/../..,
// then b -> .).
func (e *extractor) verifyLinks() error {
	for _, l := range e.links {
		target, err := e.root.Readlink(l)
		if err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
		if err := checkLinkTarget(e.root, l, target); err != nil {
			return fmt.Errorf("%s (checked after unpacking): %w", l, err)
		}
	}
	return nil
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
