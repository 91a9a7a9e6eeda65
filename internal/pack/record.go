package pack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// RecordFile is the name of the pack record merge writes at the root of the
// module tree (lib/modules/<release>/). depmod ignores it, so kmod's
// indexes are unaffected.
const RecordFile = "modules.packs.json"

// RecordFormat is the version of the record's format.
const RecordFormat = 1

// Record lists which pack each added module came from.
type Record struct {
	Format int `json:"format"`
	// Release is the kernel release of the merged tree.
	Release string       `json:"kernel_release"`
	Packs   []RecordPack `json:"packs"`
	// Shadows lists stock modules replaced by pack modules.
	Shadows []RecordShadow `json:"shadows,omitempty"`
}

// RecordPack is one merged pack.
type RecordPack struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// SHA256 is the pack file's hash.
	SHA256 string `json:"sha256,omitempty"`
	// Files are the module paths relative to lib/modules/<release>.
	Files []string `json:"files"`
}

// RecordShadow is a stock module replaced by a pack module.
type RecordShadow struct {
	Module string `json:"module"`
	Stock  string `json:"stock"`
	Pack   string `json:"pack"`
	File   string `json:"file"`
}

// Origins maps each module path of the record to "name version" of its
// pack.
func (r *Record) Origins() map[string]RecordPack {
	out := map[string]RecordPack{}
	if r == nil {
		return out
	}
	for _, p := range r.Packs {
		for _, f := range p.Files {
			out[f] = p
		}
	}
	return out
}

// Encode returns the record's canonical JSON.
func (r *Record) Encode() []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err) // only plain strings and slices: cannot fail
	}
	return append(b, '\n')
}

// DecodeRecord parses a record; name is used in errors.
func DecodeRecord(name string, b []byte) (*Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if r.Format != RecordFormat {
		return nil, fmt.Errorf("%s: format %d, want %d", name, r.Format, RecordFormat)
	}
	for i, p := range r.Packs {
		for _, f := range p.Files {
			if c := path.Clean(f); c != f || path.IsAbs(f) || c == ".." || len(c) > 2 && c[:3] == "../" {
				return nil, fmt.Errorf("%s: packs[%d]: bad file %q", name, i, f)
			}
		}
	}
	return &r, nil
}

// ReadRecordDir reads the record of a module directory; it returns nil,
// nil when there is none.
func ReadRecordDir(moduleDir string) (*Record, error) {
	return ReadRecordFS(os.DirFS(moduleDir), moduleDir)
}

// maxRecordSize bounds a record read from an image (untrusted): a real
// one lists a few hundred modules in some KiB.
const maxRecordSize = 64 << 20

// ReadRecordFS reads the record of a module directory given as a file
// system (a tree's Files); name is used in messages. It returns nil, nil
// when there is none.
func ReadRecordFS(fsys fs.FS, name string) (*Record, error) {
	if fsys == nil {
		return nil, nil
	}
	f, err := fsys.Open(RecordFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := filepath.Join(name, RecordFile)
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	} else if !st.Mode().IsRegular() || st.Size() > maxRecordSize {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", p, maxRecordSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return DecodeRecord(p, b)
}

// FindRecord finds and reads the record in an image's file system
// (image.OpenFS): at the root of a flat image or in <release>/modules/ of
// a nested one (the first by name when there are several). prefix is the
// module tree's path inside the image ("" for flat, "<release>/modules"
// for nested); name is used in messages. It returns a nil record when the
// image has none.
func FindRecord(fsys fs.FS, name string) (rec *Record, prefix string, err error) {
	if rec, err := ReadRecordFS(fsys, name); err != nil || rec != nil {
		return rec, "", err
	}
	nested, err := fs.Glob(fsys, "*/modules/"+RecordFile)
	if err != nil || len(nested) == 0 {
		return nil, "", err
	}
	sort.Strings(nested)
	prefix = path.Dir(nested[0])
	sub, err := fs.Sub(fsys, prefix)
	if err != nil {
		return nil, "", err
	}
	rec, err = ReadRecordFS(sub, name+"/"+prefix)
	return rec, prefix, err
}
