// Package pack reads and writes module packs: self-describing bundles of
// kernel modules for one kernel release, stored as a .tar.zst holding
// pack.json and the .ko files under the pack's name. Packs are layered over
// a base module tree by Merge, which checks them against the base and each
// other before anything is written.
package pack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
)

// MetaFile is the metadata file's name inside a pack.
const MetaFile = "pack.json"

// FormatVersion is the pack.json format version.
const FormatVersion = 1

// Ext is the file extension of packs.
const Ext = ".tar.zst"

// maxPackBytes bounds the uncompressed size of a pack read into memory,
// and maxEntryBytes that of one entry (a module: far above any real .ko).
const (
	maxPackBytes  = 1 << 30
	maxEntryBytes = 256 << 20
)

// Meta is the content of pack.json.
type Meta struct {
	Format        int      `json:"format"`
	Name          string   `json:"name"`
	Version       string   `json:"version,omitempty"`
	KernelRelease string   `json:"kernel_release"`
	Arch          string   `json:"arch"`
	Modules       []Module `json:"modules"`
}

// Module describes one .ko in a pack.
type Module struct {
	// File is the path inside the pack: <pack name>/<relative path>.ko.
	File       string   `json:"file"`
	Name       string   `json:"name"`
	SHA256     string   `json:"sha256"`
	SrcVersion string   `json:"srcversion,omitempty"`
	Vermagic   string   `json:"vermagic"`
	Exports    []Symbol `json:"exports,omitempty"`
	Needs      []Symbol `json:"needs,omitempty"`
}

// Symbol is an exported or needed symbol; CRC is "0x%08x" when known.
type Symbol struct {
	Name string `json:"name"`
	CRC  string `json:"crc,omitempty"`
	Weak bool   `json:"weak,omitempty"`
}

// Pack is an opened pack: its metadata, file contents and parsed modules.
type Pack struct {
	Meta Meta
	// Source is where the pack was read from (for messages).
	Source string
	// SHA256 is the hex SHA-256 of the pack file (set by Open).
	SHA256 string
	// Files maps File (as in Meta.Modules) to the module's bytes.
	Files map[string][]byte
	// Parsed maps File to the parsed module.
	Parsed map[string]*kmodule.Module
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// ValidName reports whether s can be a pack name (it becomes a directory).
func ValidName(s string) bool { return nameRE.MatchString(s) && s != "." && s != ".." }

// ArchOf maps an ELF machine to the kernel's arch name (x86_64, arm64, or
// the lower-case machine name), as packs and module trees name it.
func ArchOf(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_AARCH64:
		return "arm64"
	}
	return strings.ToLower(strings.TrimPrefix(m.String(), "EM_"))
}

func crcString(s kmodule.Symbol) string {
	if !s.HasCRC {
		return ""
	}
	return fmt.Sprintf("0x%08x", uint32(s.CRC))
}

// Describe builds the metadata of one module file.
func Describe(file string, data []byte) (Module, *kmodule.Module, error) {
	m, err := kmodule.Parse(file, data)
	if err != nil {
		return Module{}, nil, fmt.Errorf("%s: %w", file, err)
	}
	sum := sha256.Sum256(data)
	md := Module{File: file, Name: m.Name, SHA256: hex.EncodeToString(sum[:]),
		SrcVersion: m.Info("srcversion"), Vermagic: m.Vermagic()}
	for _, e := range m.Exports {
		md.Exports = append(md.Exports, Symbol{Name: e.Name, CRC: crcString(e)})
	}
	for _, n := range m.Needs {
		if n.VersionsOnly {
			continue
		}
		md.Needs = append(md.Needs, Symbol{Name: n.Name, CRC: crcString(n.Symbol), Weak: n.Weak})
	}
	return md, m, nil
}

// CreateOptions describe a new pack.
type CreateOptions struct {
	Name, Version string
	// KernelRelease is required; Arch defaults to the modules' ELF machine.
	KernelRelease, Arch string
	// Modules maps the path inside the pack, relative to the pack's name
	// directory (e.g. "v4l2loopback.ko"), to the file on disk.
	Modules map[string]string
	// ModTime is stored for every tar entry (default: the Unix epoch), so
	// packs are reproducible.
	ModTime time.Time
	// Force overwrites an existing output file.
	Force bool
}

// Create writes a pack to out atomically.
func Create(out string, o CreateOptions) (*Meta, error) {
	if !ValidName(o.Name) {
		return nil, fmt.Errorf("pack: invalid pack name %q (letters, digits, . _ + -)", o.Name)
	}
	if o.KernelRelease == "" {
		return nil, fmt.Errorf("pack: %s: kernel release is required", o.Name)
	}
	if len(o.Modules) == 0 {
		return nil, fmt.Errorf("pack: %s: no modules", o.Name)
	}
	meta := Meta{Format: FormatVersion, Name: o.Name, Version: o.Version, KernelRelease: o.KernelRelease, Arch: o.Arch}
	var rels []string
	for r := range o.Modules {
		rels = append(rels, r)
	}
	sort.Strings(rels)
	files := map[string][]byte{}
	for _, r := range rels {
		clean := path.Clean(r)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || !kmodule.IsModulePath(clean) {
			return nil, fmt.Errorf("pack: %s: invalid module path %q", o.Name, r)
		}
		data, err := os.ReadFile(o.Modules[r])
		if err != nil {
			return nil, fmt.Errorf("pack: %s: %w", o.Name, err)
		}
		file := o.Name + "/" + clean
		md, m, err := Describe(file, data)
		if err != nil {
			return nil, fmt.Errorf("pack: %s: %s: %w", o.Name, o.Modules[r], err)
		}
		arch := ArchOf(m.Machine)
		if meta.Arch == "" {
			meta.Arch = arch
		} else if meta.Arch != arch {
			return nil, fmt.Errorf("pack: %s: %s is %s, pack is %s", o.Name, o.Modules[r], arch, meta.Arch)
		}
		meta.Modules = append(meta.Modules, md)
		files[file] = data
	}
	f, err := atomicfile.Create(out, o.Force)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer f.Abort()
	if err := write(f, &meta, files, o.ModTime); err != nil {
		return nil, fmt.Errorf("pack: %s: %w", out, err)
	}
	if err := f.Commit(0o644); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return &meta, nil
}

func write(w io.Writer, meta *Meta, files map[string][]byte, mtime time.Time) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	mj, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	mj = append(mj, '\n')
	hdr := func(name string, mode int64, size int) *tar.Header {
		return &tar.Header{Name: name, Mode: mode, Size: int64(size), ModTime: mtime, Format: tar.FormatPAX,
			Typeflag: tar.TypeReg, Uname: "root", Gname: "root"}
	}
	if err := tw.WriteHeader(hdr(MetaFile, 0o644, len(mj))); err != nil {
		return err
	}
	if _, err := tw.Write(mj); err != nil {
		return err
	}
	dirs := map[string]bool{}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for d := path.Dir(n); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	for _, d := range dl {
		h := hdr(d+"/", 0o755, 0)
		h.Typeflag = tar.TypeDir
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	for _, n := range names {
		if err := tw.WriteHeader(hdr(n, 0o644, len(files[n]))); err != nil {
			return err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// diffSymbols describes the first difference between two symbol lists, or
// returns "" when they are equal.
func diffSymbols(got, want []Symbol) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("pack.json lists %s, the module does not", want[i].Name)
		case i >= len(want):
			return fmt.Sprintf("the module has %s, pack.json does not list it", got[i].Name)
		case got[i] != want[i]:
			return fmt.Sprintf("the module has %+v, pack.json says %+v", got[i], want[i])
		}
	}
	return ""
}

// ErrCorrupt is wrapped by errors about malformed packs.
var ErrCorrupt = errors.New("corrupt pack")

// Open reads and verifies a pack file.
func Open(p string) (*Pack, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	pk, err := Read(io.TeeReader(f, h), p)
	if err != nil {
		return nil, err
	}
	// The zstd reader may stop before the end of the file; hash the rest.
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("pack: %s: %w", p, err)
	}
	pk.SHA256 = hex.EncodeToString(h.Sum(nil))
	return pk, nil
}

// Read reads and verifies a pack from r; name is used in messages. It
// refuses entries outside the pack's directory, unknown entries, modules
// whose bytes do not match pack.json, and metadata that does not match the
// modules' content.
func Read(r io.Reader, name string) (*Pack, error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxPackBytes))
	if err != nil {
		return nil, corrupt(name, "zstd: %v", err)
	}
	defer zr.Close()
	return readTar(io.LimitReader(zr, maxPackBytes), name)
}

// corrupt is the error for a malformed pack.
func corrupt(name, format string, a ...any) error {
	return fmt.Errorf("pack: %s: %s: %w", name, fmt.Sprintf(format, a...), ErrCorrupt)
}

// readTar reads and verifies the uncompressed tar stream of a pack.
func readTar(r io.Reader, name string) (*Pack, error) {
	metaBytes, files, err := readEntries(r, name)
	if err != nil {
		return nil, err
	}
	meta, err := decodeMeta(metaBytes, name)
	if err != nil {
		return nil, err
	}
	pk := &Pack{Meta: *meta, Source: name, Files: map[string][]byte{}, Parsed: map[string]*kmodule.Module{}}
	if err := pk.verifyModules(files); err != nil {
		return nil, err
	}
	for extra := range files {
		return nil, corrupt(name, "entry %q is not listed in %s", extra, MetaFile)
	}
	return pk, nil
}

// readEntries reads the archive's regular files, each bounded, refusing
// absolute and escaping names, links, devices and duplicates.
func readEntries(r io.Reader, name string) (metaBytes []byte, files map[string][]byte, err error) {
	tr := tar.NewReader(r)
	files = map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, corrupt(name, "reading archive: %v", err)
		}
		n, err := entryName(h, name)
		if err != nil {
			return nil, nil, err
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		data, err := readEntry(tr, h, n, name)
		if err != nil {
			return nil, nil, err
		}
		if n == MetaFile {
			metaBytes = data
			continue
		}
		if _, dup := files[n]; dup {
			return nil, nil, corrupt(name, "duplicate entry %q", n)
		}
		files[n] = data
	}
	if metaBytes == nil {
		return nil, nil, corrupt(name, "no %s", MetaFile)
	}
	return metaBytes, files, nil
}

// entryName checks an entry's name and type and returns the clean name.
func entryName(h *tar.Header, name string) (string, error) {
	n := h.Name
	if strings.HasPrefix(n, "/") || strings.Contains(n, "\\") {
		return "", corrupt(name, "entry %q: absolute path", n)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", corrupt(name, "entry %q: path traversal", n)
		}
	}
	if h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeReg {
		return "", corrupt(name, "entry %q: only regular files and directories are allowed", h.Name)
	}
	return path.Clean(n), nil
}

// readEntry reads one file entry of at most maxEntryBytes.
func readEntry(tr *tar.Reader, h *tar.Header, n, name string) ([]byte, error) {
	if h.Size > maxEntryBytes {
		return nil, corrupt(name, "entry %q: %d bytes, more than the %d a module may have", n, h.Size, int64(maxEntryBytes))
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxEntryBytes+1))
	if err != nil {
		return nil, corrupt(name, "%s: %v", n, err)
	}
	if len(data) > maxEntryBytes {
		return nil, corrupt(name, "entry %q: more than %d bytes", n, int64(maxEntryBytes))
	}
	return data, nil
}

// decodeMeta decodes and checks pack.json.
func decodeMeta(b []byte, name string) (*Meta, error) {
	var meta Meta
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return nil, corrupt(name, "%s: %v", MetaFile, err)
	}
	switch {
	case meta.Format != FormatVersion:
		return nil, corrupt(name, "%s: format %d, want %d", MetaFile, meta.Format, FormatVersion)
	case !ValidName(meta.Name):
		return nil, corrupt(name, "%s: invalid name %q", MetaFile, meta.Name)
	case meta.KernelRelease == "" || meta.Arch == "":
		return nil, corrupt(name, "%s: kernel_release and arch are required", MetaFile)
	case len(meta.Modules) == 0:
		return nil, corrupt(name, "%s: no modules", MetaFile)
	}
	return &meta, nil
}

// verifyModules moves every module pack.json lists from files into pk,
// checking its bytes against the listed sha256 before parsing, then its
// parsed metadata against pack.json.
func (pk *Pack) verifyModules(files map[string][]byte) error {
	meta, name := &pk.Meta, pk.Source
	names := map[string]string{}
	for i, md := range meta.Modules {
		if !strings.HasPrefix(md.File, meta.Name+"/") || path.Clean(md.File) != md.File || !kmodule.IsModulePath(md.File) {
			return corrupt(name, "%s: modules[%d].file %q is not a module under %s/", MetaFile, i, md.File, meta.Name)
		}
		data, ok := files[md.File]
		if !ok {
			return corrupt(name, "%s: modules[%d].file %q is missing from the archive", MetaFile, i, md.File)
		}
		delete(files, md.File)
		// The bytes must be the ones pack.json lists before anything
		// parses (and decompresses) them.
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != md.SHA256 {
			return corrupt(name, "%s: sha256 %x, pack.json says %s", md.File, sum, md.SHA256)
		}
		m, err := checkModule(md, data, meta.Arch)
		if err != nil {
			return corrupt(name, "%v", err)
		}
		if prev, dup := names[md.Name]; dup {
			return corrupt(name, "%s: module %s is also %s", md.File, md.Name, prev)
		}
		names[md.Name] = md.File
		pk.Files[md.File] = data
		pk.Parsed[md.File] = m
	}
	return nil
}

// checkModule parses a module and compares it with its pack.json entry.
func checkModule(md Module, data []byte, arch string) (*kmodule.Module, error) {
	got, m, err := Describe(md.File, data)
	if err != nil {
		return nil, err
	}
	switch {
	case got.SHA256 != md.SHA256:
		return nil, fmt.Errorf("%s: sha256 %s, pack.json says %s", md.File, got.SHA256, md.SHA256)
	case got.Name != md.Name || got.Vermagic != md.Vermagic:
		return nil, fmt.Errorf("%s: name/vermagic %q/%q, pack.json says %q/%q", md.File, got.Name, got.Vermagic, md.Name, md.Vermagic)
	case got.SrcVersion != md.SrcVersion:
		return nil, fmt.Errorf("%s: srcversion %q, pack.json says %q", md.File, got.SrcVersion, md.SrcVersion)
	case ArchOf(m.Machine) != arch:
		return nil, fmt.Errorf("%s: module is %s, pack.json says %s", md.File, ArchOf(m.Machine), arch)
	}
	if d := diffSymbols(got.Exports, md.Exports); d != "" {
		return nil, fmt.Errorf("%s: exports differ from pack.json: %s", md.File, d)
	}
	if d := diffSymbols(got.Needs, md.Needs); d != "" {
		return nil, fmt.Errorf("%s: needs differ from pack.json: %s", md.File, d)
	}
	return m, nil
}
