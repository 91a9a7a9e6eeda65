// Package digest computes the SHA-256 identities used to pin inputs: of a
// file, and of a directory tree (paths, types, executable bits, contents and
// symlink targets). One definition serves the kernel cache key, module
// source pins and release checksums, so the same input always gets the
// same pin.
package digest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"
)

// bufPool holds File's read buffers: Tree hashes tens of thousands of
// files, and a fresh buffer for each (io.Copy's) kept the collector busy.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// File returns the hex SHA-256 of the file at path.
func File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	// The bare Reader hides os.File's WriteTo, which would ignore buf.
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, *buf); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Tree hashes a directory tree: every entry's path, type, executable bits
// and content (the target for symlinks), in byte-wise path order, skipping
// .git directories and the top-level entries named in skip. Other file
// types are ignored. Files are hashed in parallel. Two trees with the same
// digest have the same content.
func Tree(ctx context.Context, dir string, skip ...string) (string, error) {
	type ent struct {
		rel, kind, sum string
	}
	var ents []*ent
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && d.Name() == ".git" && rel != "." {
			return filepath.SkipDir
		}
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		e := &ent{rel: filepath.ToSlash(rel)}
		switch {
		case d.IsDir():
			e.kind = "d"
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.kind, e.sum = "l", t
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			e.kind = fmt.Sprintf("f%o", info.Mode().Perm()&0o111)
		default:
			return nil
		}
		ents = append(ents, e)
		return nil
	})
	if err != nil {
		return "", err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU() * 2)
	for _, e := range ents {
		if e.kind[0] != 'f' {
			continue
		}
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			s, err := File(filepath.Join(dir, filepath.FromSlash(e.rel)))
			e.sum = s
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].rel < ents[j].rel })
	h := sha256.New()
	for _, e := range ents {
		fmt.Fprintf(h, "%s\x00%s\x00%s\n", e.kind, e.rel, e.sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
