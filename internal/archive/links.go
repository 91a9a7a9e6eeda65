package archive

import (
	"fmt"
	"os"
	"path"
	"strings"
)

// maxLinkHops bounds the symlinks followed while resolving one path, like
// the kernel's ELOOP limit.
const maxLinkHops = 40

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

// resolver follows a path through the symlinks already in the tree, the
// way the kernel would: stack is the physical directory reached so far
// (components that are not links), ".." pops it, and a link is replaced
// by its target, resolved from the link's directory. A component that
// does not exist yet is taken as the directory it will become.
type resolver struct {
	root  *os.Root
	stack []string
	hops  int
	what  string // for errors: the path being resolved
}

func (r *resolver) walk(p string) error {
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(r.stack) == 0 {
				return fmt.Errorf("%s points outside the tree: %w", r.what, ErrUnsafe)
			}
			r.stack = r.stack[:len(r.stack)-1]
			continue
		}
		r.stack = append(r.stack, c)
		cur := strings.Join(r.stack, "/")
		fi, err := r.root.Lstat(cur)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		if r.hops++; r.hops > maxLinkHops {
			return fmt.Errorf("%s: too many levels of links: %w", r.what, ErrUnsafe)
		}
		next, err := r.root.Readlink(cur)
		if err != nil {
			return fmt.Errorf("%s: %w", r.what, err)
		}
		if path.IsAbs(next) {
			return fmt.Errorf("%s goes through the absolute link %s: %w", r.what, cur, ErrUnsafe)
		}
		r.stack = r.stack[:len(r.stack)-1]
		if err := r.walk(next); err != nil {
			return err
		}
	}
	return nil
}

// realPath returns where rel really is: its directory resolved through
// the links already unpacked, plus its last component (not followed:
// that is the entry itself). "d/d/d/l" with d -> . is "l".
func realPath(root *os.Root, rel string) (string, error) {
	r := &resolver{root: root, what: fmt.Sprintf("directory of %q", rel)}
	if d := path.Dir(rel); d != "." {
		if err := r.walk(d); err != nil {
			return "", err
		}
	}
	return path.Join(append(r.stack, path.Base(rel))...), nil
}

// checkLinkTarget refuses empty and absolute symlink targets and targets
// that leave the tree when resolved from the directory the link at rel
// really is in, following the symlinks already unpacked.
func checkLinkTarget(root *os.Root, rel, target string) error {
	if target == "" {
		return fmt.Errorf("empty symlink target: %w", ErrUnsafe)
	}
	if path.IsAbs(target) {
		return fmt.Errorf("symlink to absolute path %q: %w", target, ErrUnsafe)
	}
	if strings.ContainsRune(target, 0) {
		return fmt.Errorf("symlink target %q: NUL in target: %w", target, ErrUnsafe)
	}
	r := &resolver{root: root, what: fmt.Sprintf("symlink target %q", target)}
	if d := path.Dir(rel); d != "." {
		if err := r.walk(d); err != nil {
			return err
		}
	}
	return r.walk(target)
}
