package modlist

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// LoadOptions say how LoadWith resolves path: sources.
type LoadOptions struct {
	// Root is the repository. A relative path: is taken from the list's
	// directory and may use .. as long as the result stays inside Root.
	// Empty: the git top level of the list's directory (git rev-parse
	// --show-toplevel), or the list's directory outside a git work tree.
	Root string
	// ActionMode is set in the GitHub Action, with Root the workspace
	// (GITHUB_WORKSPACE): an absolute path: must then be inside Root too.
	// In CLI use an absolute path may name any directory, such as
	// /usr/src/acpi-call-1.2.2.
	ActionMode bool
}

// resolvePaths checks every path: source against o, at its position.
func (l *List) resolvePaths(o LoadOptions) error {
	root := o.Root
	if root == "" {
		root = gitTopLevel(l.Dir)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("modlist: %w", err)
	}
	l.Root = root
	var errs []error
	for i := range l.Modules {
		m := &l.Modules[i]
		if m.Path == "" {
			continue
		}
		if msg := l.checkPath(m, o.ActionMode); msg != "" {
			errs = append(errs, &Error{File: l.File, Line: m.PathPos.Line, Column: m.PathPos.Column,
				Field: fmt.Sprintf("modules[%d].path", i), Msg: msg})
		}
	}
	return errors.Join(errs...)
}

// checkPath says what is wrong with a module's path ("" if nothing).
func (l *List) checkPath(m *Module, actionMode bool) string {
	dir := l.SourceDir(m)
	abs := filepath.IsAbs(m.Path)
	if abs && !actionMode {
		return ""
	}
	where := "the repository"
	if actionMode {
		where = "the workspace"
	}
	if !inside(l.Root, dir) {
		if abs {
			return fmt.Sprintf("%q is outside %s (%s)", m.Path, where, l.Root)
		}
		return fmt.Sprintf("%q resolves to %s, outside %s (%s); a relative path is taken from the list's directory (%s) and may use .. only within %s",
			m.Path, dir, where, l.Root, l.Dir, where)
	}
	// A link inside the repository may still lead out of it.
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "" // a missing directory is reported by the build
	}
	realRoot, err := filepath.EvalSymlinks(l.Root)
	if err == nil && !inside(realRoot, realDir) {
		return fmt.Sprintf("%q leads through a symbolic link to %s, outside %s (%s)", m.Path, realDir, where, l.Root)
	}
	return ""
}

// inside reports whether path p is root or below it (both clean and
// absolute).
func inside(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// gitTopLevel returns the git work tree holding dir, or dir itself.
func gitTopLevel(dir string) string {
	cmd := exec.Command("git", "-C", dir, "rev-parse", "--show-toplevel")
	cmd.Env = safeenv.Environ("GIT_DIR", "GIT_WORK_TREE")
	out, err := cmd.Output()
	if top := strings.TrimSpace(string(out)); err == nil && top != "" {
		return top
	}
	return dir
}
