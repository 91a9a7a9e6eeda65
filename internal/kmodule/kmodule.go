// Package kmodule reads Linux kernel module files (.ko, optionally
// compressed with gzip, xz or zstd): their .modinfo records, the symbols
// they export (with modversions CRCs, GPL-ness and namespaces, read from
// the export tables through their relocations) and the symbols they need.
//
// It is the single place where module ELF files are parsed; depmod, the
// build verifier, packs and merge all use it.
package kmodule

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression identifies how a module file is compressed.
type Compression int

// Compression kinds, detected from magic bytes.
const (
	None Compression = iota
	Gzip
	XZ
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case XZ:
		return "xz"
	case Zstd:
		return "zstd"
	}
	return "none"
}

// Symbol is an exported or imported symbol with its modversions CRC.
type Symbol struct {
	Name   string
	CRC    uint64
	HasCRC bool
	// GPL is set for an export the module places in __ksymtab_gpl (or
	// marks GPL-only in __kflagstab): EXPORT_SYMBOL_GPL.
	GPL bool
	// Namespace is an export's symbol namespace ("" for none).
	Namespace string
}

// Need is a symbol a module imports.
type Need struct {
	Symbol
	// Weak is set for STB_WEAK undefined symbols.
	Weak bool
	// VersionsOnly is set for entries that come only from __versions
	// (for example module_layout); they never create a dependency.
	VersionsOnly bool
}

// KV is one .modinfo record.
type KV struct{ Key, Value string }

// Module is the parsed content of one module file.
type Module struct {
	// Name is the normalised module name (see ModName).
	Name        string
	Compression Compression
	// ModInfo holds the .modinfo records in file order.
	ModInfo []KV
	// Exports lists exported symbols the way kmod's depmod reads them:
	// from __crc_* symbols when present, otherwise every string of
	// __ksymtab_strings (then without CRCs, and including namespace
	// strings). Entries that are in the export tables carry GPL and
	// Namespace from there.
	Exports []Symbol
	// Ksymtab lists the exports the way the kernel's loader and modpost
	// see them: one per entry of __ksymtab, then of __ksymtab_gpl (or
	// __ksymtab with __kflagstab), with GPL, Namespace and the CRC of the
	// parallel __kcrctab table (or of the __crc_ symbol). Nil for a module
	// without export tables.
	Ksymtab []Symbol
	// Needs lists undefined symbols in symbol-table order, followed by
	// __versions entries not matched by name.
	Needs []Need
	// Machine is the ELF machine of the module.
	Machine elf.Machine
}

// Info returns the value of the first .modinfo record with key, or "".
func (m *Module) Info(key string) string {
	for _, kv := range m.ModInfo {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// InfoAll returns the values of every .modinfo record with key, in order.
func (m *Module) InfoAll(key string) []string {
	var out []string
	for _, kv := range m.ModInfo {
		if kv.Key == key {
			out = append(out, kv.Value)
		}
	}
	return out
}

// Vermagic returns the module's vermagic string.
func (m *Module) Vermagic() string { return m.Info("vermagic") }

// ModName returns the normalised module name of a path: the base name up to
// the first '.', with '-' mapped to '_'.
func ModName(p string) string {
	b := path.Base(strings.ReplaceAll(p, "\\", "/"))
	if i := strings.IndexByte(b, '.'); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// IsModulePath reports whether a file name looks like a kernel module
// (.ko, .ko.gz, .ko.xz or .ko.zst).
func IsModulePath(p string) bool {
	return strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.gz") ||
		strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst")
}

// StripCompressionSuffix maps x.ko.xz (etc.) to x.ko.
func StripCompressionSuffix(p string) string {
	for _, s := range []string{".gz", ".xz", ".zst"} {
		if strings.HasSuffix(p, ".ko"+s) {
			return strings.TrimSuffix(p, s)
		}
	}
	return p
}

// Detect returns the compression of data from its magic bytes.
func Detect(data []byte) Compression {
	switch {
	case bytes.HasPrefix(data, []byte{0x28, 0xB5, 0x2F, 0xFD}):
		return Zstd
	case bytes.HasPrefix(data, []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}):
		return XZ
	case bytes.HasPrefix(data, []byte{0x1F, 0x8B}):
		return Gzip
	}
	return None
}

// MaxModuleSize caps the decompressed size of one module file: far above
// any real module (the largest are tens of MiB), low enough that a
// decompression bomb cannot exhaust memory.
const MaxModuleSize = 256 << 20

// ErrTooLarge is returned (wrapped) for a module that decompresses to more
// than MaxModuleSize bytes.
var ErrTooLarge = errors.New("decompressed module exceeds 256 MiB (MaxModuleSize)")

// Decompress returns the uncompressed ELF bytes of a module file's content,
// at most MaxModuleSize bytes.
func Decompress(data []byte) ([]byte, Compression, error) {
	c := Detect(data)
	var r io.Reader
	switch c {
	case None:
		return data, c, nil
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, c, fmt.Errorf("gzip: %w", err)
		}
		r = zr
	case XZ:
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, c, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(MaxModuleSize), zstd.WithDecoderMaxWindow(MaxModuleSize))
		if err != nil {
			return nil, c, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	out, err := readCapped(r, MaxModuleSize, 4*len(data))
	if err != nil {
		return nil, c, fmt.Errorf("%s decompression: %w", c, err)
	}
	return out, c, nil
}

// readCapped reads r to EOF, refusing more than limit bytes. The buffer
// starts at hint bytes and doubles, but never past limit+1 bytes, so a
// stream that does not stop costs about 1.5 times the limit at most.
func readCapped(r io.Reader, limit, hint int) ([]byte, error) {
	b := make([]byte, 0, min(max(hint, 64<<10), limit+1))
	for {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(2*cap(b), limit+1))
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > limit {
			return nil, ErrTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// ReadFile reads and parses the module at path p.
func ReadFile(p string) (*Module, error) {
	data, release, err := mapFile(p)
	if err != nil {
		return nil, err
	}
	defer release()
	m, err := Parse(p, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

// ErrNotELF is returned for content that is not an ELF object.
var ErrNotELF = errors.New("not an ELF kernel module")

// Parse parses module content (possibly compressed). name is used for the
// module name (see ModName).
func Parse(name string, data []byte) (*Module, error) {
	raw, c, err := Decompress(data)
	if err != nil {
		return nil, err
	}
	m := &Module{Name: ModName(name), Compression: c}
	if err := parseELF(raw, m); err != nil {
		return nil, err
	}
	return m, nil
}
