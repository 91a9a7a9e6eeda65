// Package kimage opens Linux kernel images and reads the kernel's exported
// symbols: name, modversions CRC, GPL-ness and namespace, everything the
// vmlinux lines of Module.symvers hold.
//
// Accepted inputs:
//
//   - an x86 bzImage (boot protocol 2.08 or later): the payload named by
//     the setup header (payload_offset, payload_length) is decompressed
//     (gzip, xz, zstd, lz4, lzma or bzip2) to the vmlinux ELF it holds;
//   - a vmlinux ELF file (with or without section headers);
//   - an arm64 Image (a raw binary with the 64-byte arm64 header), plain,
//     gzip'ed (Image.gz) or in an EFI zboot wrapper;
//   - any of the above compressed as a whole (vmlinux.xz, Image.gz, ...).
//
// The export tables are found through section headers when there are any,
// otherwise by their structure (see [File.Exports]). Entries are read as
// the kernel's loader reads them (PREL32 offsets relative to the entry),
// so the load address (KASLR, relocatable kernels) does not matter.
//
// Like debug/elf, the package keeps no global state; a [File] reads its
// input on demand and must be closed. Decompressed data is capped
// ([Options.MaxSize]) so that a hostile input cannot exhaust memory.
package kimage

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
)

// DefaultMaxSize caps the decompressed size of a kernel (and of any single
// section read from an ELF kernel): 256 MiB, far above any real vmlinux
// without debug information.
const DefaultMaxSize = 256 << 20

// Errors wrapped by the errors of this package; test with errors.Is.
var (
	// ErrNotKernel: the input is none of the accepted kernel formats.
	ErrNotKernel = errors.New("not a kernel image (bzImage, vmlinux ELF or arm64 Image)")
	// ErrTruncated: the input ends before a structure it announces.
	ErrTruncated = errors.New("truncated kernel image")
	// ErrUnknownCompression: the payload's compression is not supported.
	ErrUnknownCompression = errors.New("unknown or unsupported compression")
	// ErrTooLarge: decompressed data exceeds Options.MaxSize.
	ErrTooLarge = errors.New("decompressed kernel exceeds the size limit")
	// ErrNoModversions: the kernel has export tables but no CRC tables
	// (built without CONFIG_MODVERSIONS).
	ErrNoModversions = errors.New("kernel built without CONFIG_MODVERSIONS (no __kcrctab)")
	// ErrNoExports: no export table was found.
	ErrNoExports = errors.New("no kernel export table (__ksymtab) found")
	// ErrUnknownLayout: export tables exist but their layout is not one
	// this package knows.
	ErrUnknownLayout = errors.New("unknown export table layout")
)

// Format is the container format of a kernel image.
type Format int

// Kernel image formats.
const (
	// FormatELF is a vmlinux ELF file.
	FormatELF Format = iota + 1
	// FormatBzImage is an x86 bzImage holding a compressed vmlinux ELF.
	FormatBzImage
	// FormatArm64Image is an arm64 Image: a raw memory image.
	FormatArm64Image
	// FormatZboot is an EFI zboot image ("MZ", "zimg") holding a
	// compressed arm64 Image.
	FormatZboot
)

// String returns the format's name ("bzImage", "arm64 Image", ...).
func (f Format) String() string {
	switch f {
	case FormatELF:
		return "ELF"
	case FormatBzImage:
		return "bzImage"
	case FormatArm64Image:
		return "arm64 Image"
	case FormatZboot:
		return "EFI zboot"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Options tune how a kernel image is read. The zero value (or nil) uses
// the defaults.
type Options struct {
	// MaxSize caps decompressed data and single reads; DefaultMaxSize if 0.
	MaxSize int64
}

func (o *Options) maxSize() int64 {
	if o == nil || o.MaxSize <= 0 {
		return DefaultMaxSize
	}
	return o.MaxSize
}

// File is an open kernel image.
type File struct {
	// Name is the path given to Open ("" for NewFile); errors carry it.
	Name string
	// Format is the container format of the input.
	Format Format
	// Compression is how the kernel inside the container is compressed
	// (None for a plain vmlinux or Image).
	Compression Compression
	// Machine is the kernel's architecture (EM_X86_64, EM_AARCH64, ...).
	Machine elf.Machine
	// Size is the size of the (decompressed) vmlinux ELF or raw Image.
	Size int64

	elf    *elf.File // the vmlinux ELF, or nil for a raw image
	raw    []byte    // the raw image, or the in-memory ELF; nil for an ELF read from disk
	limit  int64
	closer io.Closer
}

// Open opens the kernel image at path. o may be nil.
func Open(path string, o *Options) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kimage: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("kimage: %w", err)
	}
	if !st.Mode().IsRegular() {
		fh.Close()
		return nil, fmt.Errorf("kimage: %s: not a regular file: %w", path, ErrNotKernel)
	}
	f, err := newFile(fh, st.Size(), o)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("kimage: %s: %w", path, err)
	}
	f.Name = path
	if f.elf != nil && f.raw == nil {
		f.closer = fh // the ELF is read from the file on demand
	} else {
		fh.Close()
	}
	return f, nil
}

// NewFile reads a kernel image of size bytes from r. o may be nil. The
// caller keeps r open until the File is closed.
func NewFile(r io.ReaderAt, size int64, o *Options) (*File, error) {
	f, err := newFile(r, size, o)
	if err != nil {
		return nil, fmt.Errorf("kimage: %w", err)
	}
	return f, nil
}

// Close releases the file opened by Open.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}

// errorf formats an error naming the file.
func (f *File) errorf(format string, a ...any) error {
	if f.Name != "" {
		return fmt.Errorf("kimage: %s: "+format, append([]any{f.Name}, a...)...)
	}
	return fmt.Errorf("kimage: "+format, a...)
}

// headLen is how much of the input is read to detect its format.
const headLen = 4096

func newFile(r io.ReaderAt, size int64, o *Options) (*File, error) {
	limit := o.maxSize()
	if size < 0 {
		return nil, fmt.Errorf("negative size %d", size)
	}
	head := make([]byte, min(size, headLen))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte(elf.ELFMAG)):
		return openELF(io.NewSectionReader(r, 0, size), nil, FormatELF, None, size, limit)
	case isBzImage(head):
		return openBzImage(r, size, head, limit)
	case isZboot(head):
		return openZboot(r, size, head, limit)
	case isArm64Image(head):
		if size > limit {
			return nil, fmt.Errorf("arm64 Image of %d bytes: %w", size, ErrTooLarge)
		}
		img := make([]byte, size)
		if _, err := r.ReadAt(img, 0); err != nil && err != io.EOF {
			return nil, err
		}
		return openRaw(img, FormatArm64Image, None, limit), nil
	}
	if c := detect(head); c != None {
		data, err := decompress(c, io.NewSectionReader(r, 0, size), limit, 0)
		if err != nil {
			return nil, err
		}
		return openInner(data, 0, c, limit)
	}
	return nil, ErrNotKernel
}

// openInner opens decompressed data that must be a vmlinux ELF or an
// arm64 Image. format is the outer container (0: take the inner one).
func openInner(data []byte, format Format, c Compression, limit int64) (*File, error) {
	switch {
	case bytes.HasPrefix(data, []byte(elf.ELFMAG)):
		if format == 0 {
			format = FormatELF
		}
		return openELF(bytes.NewReader(data), data, format, c, int64(len(data)), limit)
	case isArm64Image(data):
		if format == 0 {
			format = FormatArm64Image
		}
		return openRaw(data, format, c, limit), nil
	}
	return nil, fmt.Errorf("%s data (%d bytes) is neither a vmlinux ELF nor an arm64 Image (starts %x): %w",
		c, len(data), data[:min(len(data), 8)], ErrNotKernel)
}

func openRaw(img []byte, format Format, c Compression, limit int64) *File {
	return &File{Format: format, Compression: c, Machine: elf.EM_AARCH64,
		Size: int64(len(img)), raw: img, limit: limit}
}

func openELF(r io.ReaderAt, data []byte, format Format, c Compression, size, limit int64) (*File, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		if size < 64 {
			return nil, fmt.Errorf("ELF header: %v: %w", err, ErrTruncated)
		}
		return nil, fmt.Errorf("vmlinux ELF: %w", err)
	}
	if ef.Type == elf.ET_REL {
		return nil, fmt.Errorf("relocatable ELF object (a kernel module?): %w", ErrNotKernel)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return nil, fmt.Errorf("ELF type %v: %w", ef.Type, ErrNotKernel)
	}
	return &File{Format: format, Compression: c, Machine: ef.Machine, Size: size,
		elf: ef, raw: data, limit: limit}, nil
}

// Release returns the kernel release from the "Linux version <release> "
// banner in the image, or "" if there is none.
func (f *File) Release() string {
	if f.raw != nil {
		return bannerRelease(f.raw)
	}
	for _, s := range f.elf.Sections {
		if s.Name != ".rodata" || s.Type == elf.SHT_NOBITS || s.Size > uint64(f.limit) {
			continue
		}
		if d, err := s.Data(); err == nil {
			return bannerRelease(d)
		}
	}
	return ""
}

// bannerRelease finds "Linux version <release> " in b.
func bannerRelease(b []byte) string {
	const banner = "Linux version "
	for {
		i := bytes.Index(b, []byte(banner))
		if i < 0 {
			return ""
		}
		b = b[i+len(banner):]
		if len(b) == 0 || b[0] < '0' || b[0] > '9' {
			continue
		}
		end := bytes.IndexAny(b[:min(len(b), 256)], " \x00\n")
		if end > 0 {
			return string(b[:end])
		}
	}
}
