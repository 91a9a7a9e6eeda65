package release

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// WriteSourceArchive writes dst, a reproducible .tar.gz of module source
// trees: dirs maps a module name to its source directory, whose content
// lands under <name>/. The bytes depend only on the trees' paths, types,
// executable bits, contents and symlink targets (what digest.Tree pins,
// also skipping .git directories and special files): entries are in
// byte-wise path order, every mtime is epoch (the build's
// SOURCE_DATE_EPOCH), uid and gid are 0 with no user or group names,
// modes are 0755 (directories and executables), 0644 or 0777 (symlinks),
// the format is GNU tar (long names as GNU long-name records, so no pax
// headers and no pax time records), and the gzip header has no name and
// no mtime. dst is written atomically.
func WriteSourceArchive(dst string, dirs map[string]string, epoch int64) error {
	names := make([]string, 0, len(dirs))
	for n := range dirs {
		if n == "" || n == "." || n == ".." || strings.ContainsAny(n, `/\`) {
			return fmt.Errorf("release: source archive: module name %q is not a plain name", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	mtime := time.Unix(epoch, 0)
	err := writeTarGz(dst, func(tw *tar.Writer) error {
		for _, n := range names {
			if err := archiveTree(tw, n, dirs[n], mtime); err != nil {
				return fmt.Errorf("module %s: %w", n, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release: source archive: %w", err)
	}
	return nil
}

// writeTarGz writes dst atomically (mode 0644) as a gzip-compressed tar
// archive of the entries add writes; the gzip header has no name and no
// mtime.
func writeTarGz(dst string, add func(tw *tar.Writer) error) error {
	out, err := atomicfile.Create(dst, true)
	if err != nil {
		return err
	}
	defer out.Abort()
	zw := gzip.NewWriter(out)
	tw := tar.NewWriter(zw)
	if err := add(tw); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return out.Commit(0o644)
}

// treeEntry is one entry of a source tree.
type treeEntry struct {
	rel  string // slash-separated, relative to the tree
	mode fs.FileMode
}

// listTree lists dir's directories, regular files and symlinks (not
// .git directories), sorted byte-wise by path.
func listTree(dir string) ([]treeEntry, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", dir)
	}
	var out []treeEntry
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		t := d.Type()
		if !t.IsDir() && !t.IsRegular() && t&fs.ModeSymlink == 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out = append(out, treeEntry{rel: filepath.ToSlash(rel), mode: info.Mode()})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, err
}

// archiveTree writes the entries of dir under prefix/.
func archiveTree(tw *tar.Writer, prefix, dir string, mtime time.Time) error {
	entries, err := listTree(dir)
	if err != nil {
		return err
	}
	hdr := func(name string, typ byte, mode int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: mtime, Format: tar.FormatGNU}
	}
	if err := tw.WriteHeader(hdr(prefix+"/", tar.TypeDir, 0o755)); err != nil {
		return err
	}
	for _, e := range entries {
		name, p := prefix+"/"+e.rel, filepath.Join(dir, filepath.FromSlash(e.rel))
		switch {
		case e.mode.IsDir():
			err = tw.WriteHeader(hdr(name+"/", tar.TypeDir, 0o755))
		case e.mode&fs.ModeSymlink != 0:
			h := hdr(name, tar.TypeSymlink, 0o777)
			if h.Linkname, err = os.Readlink(p); err == nil {
				err = tw.WriteHeader(h)
			}
		default:
			err = archiveFile(tw, hdr(name, tar.TypeReg, fileMode(e.mode)), p)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	return nil
}

func fileMode(m fs.FileMode) int64 {
	if m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

func archiveFile(tw *tar.Writer, h *tar.Header, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, h.Size)
	return err
}
