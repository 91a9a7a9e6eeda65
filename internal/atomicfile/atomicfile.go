// Package atomicfile writes files and directory trees so that a failure
// never leaves partial output: content goes to a temporary name in the
// destination's directory and is renamed into place only on Commit.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrExists is returned when the destination exists and overwriting was not
// allowed.
var ErrExists = errors.New("already exists (use --force to overwrite)")

// File is a temporary file that becomes Path on Commit.
type File struct {
	*os.File
	// Path is the final destination.
	Path  string
	force bool
	done  bool
}

// Create opens a temporary file next to path. Unless force is set, an
// existing path is an error. The caller must call Commit or Abort.
func Create(path string, force bool) (*File, error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s: %w", path, ErrExists)
		}
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: output directory: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: output directory %s is not a directory", path, dir)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{File: f, Path: path, force: force}, nil
}

// Commit syncs and closes the temporary file, sets its mode and renames it to
// Path. Without force, a Path that appeared since Create is not replaced:
// Commit fails with ErrExists. On error the temporary file is removed.
func (f *File) Commit(mode os.FileMode) error {
	if f.done {
		return errors.New("atomicfile: already committed or aborted")
	}
	f.done = true
	tmp := f.Name()
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		if f.force {
			err = os.Rename(tmp, f.Path)
		} else {
			err = publish(tmp, f.Path)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	return nil
}

// publish moves tmp to path without replacing an existing path: a hard
// link fails atomically if path exists. Where links are not supported, it
// falls back to checking and renaming.
func publish(tmp, path string) error {
	err := os.Link(tmp, path)
	if err == nil {
		return os.Remove(tmp)
	}
	if _, lerr := os.Lstat(path); lerr == nil {
		return ErrExists
	}
	return os.Rename(tmp, path)
}

// Abort closes and removes the temporary file. It is safe to call after
// Commit (then it does nothing), so it can be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically with the given mode, replacing
// any existing file.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	f, err := Create(path, true)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Commit(mode)
}

// CopyFile copies the regular file from (following symlinks) to to,
// atomically, replacing an existing file and creating to's parent
// directories. The copy gets mode perm, or from's permission bits when perm
// is 0.
func CopyFile(from, to string, perm os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if perm == 0 {
		st, err := in.Stat()
		if err != nil {
			return err
		}
		perm = st.Mode().Perm()
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	out, err := Create(to, true)
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copying %s to %s: %w", from, to, err)
	}
	return out.Commit(perm)
}

// Dir is a temporary directory that becomes Path on Commit.
type Dir struct {
	// Tmp is the temporary directory to fill.
	Tmp string
	// Path is the final destination.
	Path  string
	force bool
	done  bool
}

// CreateDir makes a temporary directory next to path. Unless force is set, an
// existing path is an error; with force, an existing directory is replaced
// on Commit.
func CreateDir(path string, force bool) (*Dir, error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s: %w", path, ErrExists)
		}
	}
	parent := filepath.Dir(path)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Dir{Tmp: tmp, Path: path, force: force}, nil
}

// Commit renames the temporary directory to Path. With force, an existing
// Path is replaced (and kept if the replacement fails); without force, a
// Path that appeared since CreateDir is an ErrExists error. On error the
// temporary directory is removed.
func (d *Dir) Commit() error {
	if d.done {
		return errors.New("atomicfile: already committed or aborted")
	}
	d.done = true
	if err := os.Chmod(d.Tmp, 0o755); err != nil {
		os.RemoveAll(d.Tmp)
		return fmt.Errorf("%s: %w", d.Path, err)
	}
	var old string
	if _, err := os.Lstat(d.Path); err == nil {
		if !d.force {
			os.RemoveAll(d.Tmp)
			return fmt.Errorf("%s: %w", d.Path, ErrExists)
		}
		old = d.Tmp + ".old"
		if err := os.Rename(d.Path, old); err != nil {
			os.RemoveAll(d.Tmp)
			return fmt.Errorf("%s: %w", d.Path, err)
		}
	}
	if err := os.Rename(d.Tmp, d.Path); err != nil {
		if old != "" {
			os.Rename(old, d.Path)
		}
		os.RemoveAll(d.Tmp)
		return fmt.Errorf("%s: %w", d.Path, err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return nil
}

// Abort removes the temporary directory. It is safe to defer after Commit.
func (d *Dir) Abort() {
	if d.done {
		return
	}
	d.done = true
	os.RemoveAll(d.Tmp)
}
