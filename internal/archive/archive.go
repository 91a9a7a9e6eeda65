// Package archive unpacks tar archives (plain, gzip, xz or zstd, detected
// from magic bytes) safely: entries with absolute paths or "..", symlinks
// that resolve outside the tree (judged from the directory the link really
// lands in, through the links already unpacked, and checked again once the
// whole tree is there), hard links to symlinks, and device nodes are
// refused, and all writes go through an os.Root so nothing can escape the
// destination. The tree is unpacked into a temporary directory and renamed
// into place only when the whole archive was read, so a failure (a bad
// entry, a truncated or dropped stream, a cancelled context) leaves nothing
// behind.
package archive

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// ErrUnsafe is wrapped by errors for entries that would escape the tree.
var ErrUnsafe = errors.New("unsafe archive entry")

// ErrTooLarge is wrapped by errors for archives over a size limit
// (Options.MaxBytes) or whose compression needs more memory than
// MaxWindow.
var ErrTooLarge = errors.New("archive too large")

// MaxWindow bounds the memory a compressed stream may ask for: the zstd
// window and the xz (LZMA2) dictionary. 128 MiB covers zstd --long and
// --ultra -22 and every xz preset (xz -9 uses 64 MiB).
const MaxWindow = 128 << 20

// Options control Extract.
type Options struct {
	// StripComponents removes this many leading path components from every
	// entry (like tar --strip-components). Entries with fewer components
	// are skipped.
	StripComponents int
	// Force replaces an existing destination.
	Force bool
	// Name is used in error messages (for example the URL or file name).
	Name string
	// MaxBytes bounds the size of the decompressed tar stream (headers
	// and contents) and, separately, the declared sizes of all regular
	// files (a sparse entry's holes take no room in the stream); 0 means
	// no limit. A larger archive fails with ErrTooLarge, which bounds the
	// disk space and the number of entries a small compressed archive can
	// expand to.
	MaxBytes int64
}

// Result describes an unpacked archive.
type Result struct {
	// TopDir is the single top-level directory name of the archive before
	// stripping, or "" if there was none.
	TopDir string
	// Files, Dirs and Links count the entries written.
	Files, Dirs, Links int
	// Bytes is the total size of regular files.
	Bytes int64
}

// Decompress returns a reader of the tar stream in r, which may be gzip, xz,
// zstd or uncompressed, detected from magic bytes. Streams that need more
// than MaxWindow bytes of window or dictionary are refused.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	magic, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1F, 0x8B}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0xFD, '7', 'z', 'X', 'Z', 0}):
		head, _ := br.Peek(xzStreamHeader + xzMaxBlockHeader)
		if dict, ok := xzDictSize(head); ok && dict > MaxWindow {
			return nil, fmt.Errorf("xz: dictionary of %d MiB is over the limit of %d MiB: %w", dict>>20, MaxWindow>>20, ErrTooLarge)
		}
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xB5, 0x2F, 0xFD}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(MaxWindow), zstd.WithDecoderMaxMemory(MaxWindow),
			zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// ExtractFile unpacks the archive file at src into dest.
func ExtractFile(ctx context.Context, src, dest string, o Options) (*Result, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer f.Close()
	if o.Name == "" {
		o.Name = src
	}
	return Extract(ctx, f, dest, o)
}

// Extract unpacks the (possibly compressed) tar stream r into the directory
// dest, atomically. It stops at the next read of r once ctx is done, and
// then, like on any error, removes what it had unpacked.
func Extract(ctx context.Context, r io.Reader, dest string, o Options) (*Result, error) {
	name := o.Name
	if name == "" {
		name = "archive"
	}
	d, err := atomicfile.CreateDir(dest, o.Force)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer d.Abort()
	res, err := unpack(ctx, &ctxReader{ctx: ctx, r: r}, d.Tmp, o)
	if err != nil {
		return nil, fmt.Errorf("archive: %s: %w", name, err)
	}
	if err := d.Commit(); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return res, nil
}

// ctxReader fails every read once its context is done, so a long entry
// or a slow stream does not delay cancellation until the next entry.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// limitReader fails with ErrTooLarge once more than max bytes were read.
type limitReader struct {
	r      io.Reader
	n, max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n > l.max {
		return 0, fmt.Errorf("tar stream is larger than %d bytes: %w", l.max, ErrTooLarge)
	}
	if rest := l.max - l.n + 1; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, fmt.Errorf("tar stream is larger than %d bytes: %w", l.max, ErrTooLarge)
	}
	return n, err
}

// xz container sizes: the stream header, and the largest block header.
const (
	xzStreamHeader   = 12
	xzMaxBlockHeader = 1024
)

// xzDictSize returns the LZMA2 dictionary size declared by the first block
// header of the xz stream that starts with b, if b holds one. The decoder
// allocates it at once, so a hostile header could ask for up to 4 GiB.
// Later blocks are not seen here; what they allocate is only touched as
// far as data is decompressed, which Options.MaxBytes bounds.
func xzDictSize(b []byte) (int64, bool) {
	if len(b) < xzStreamHeader+2 || b[xzStreamHeader] == 0 {
		return 0, false
	}
	hdr := b[xzStreamHeader:]
	size := (int(hdr[0]) + 1) * 4
	if len(hdr) < size {
		return 0, false
	}
	hdr = hdr[:size-4] // without the CRC32
	flags := hdr[1]
	r := bytes.NewReader(hdr[2:])
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			if _, err := readUvarint(r); err != nil {
				return 0, false
			}
		}
	}
	for i := 0; i <= int(flags&3); i++ {
		id, err := readUvarint(r)
		if err != nil {
			return 0, false
		}
		n, err := readUvarint(r)
		if err != nil || n > uint64(r.Len()) {
			return 0, false
		}
		props := make([]byte, n)
		if _, err := io.ReadFull(r, props); err != nil {
			return 0, false
		}
		if id == 0x21 && n == 1 {
			d := props[0] & 0x3F
			if d > 40 {
				return 0, false
			}
			if d == 40 {
				return 1<<32 - 1, true
			}
			return int64(2|d&1) << (d/2 + 11), true
		}
	}
	return 0, false
}

// readUvarint reads an xz multibyte integer (at most 9 bytes).
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	for i := 0; i < 9; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		x |= uint64(c&0x7F) << (7 * i)
		if c&0x80 == 0 {
			return x, nil
		}
	}
	return 0, errors.New("xz: integer too long")
}
