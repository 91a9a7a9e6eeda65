package kimage

import (
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// Compression is a kernel compression format (CONFIG_KERNEL_*).
type Compression int

// Compression formats, detected from magic bytes.
const (
	None Compression = iota
	Gzip
	XZ
	Zstd
	LZ4
	LZMA
	Bzip2
	// LZO is recognised (to name it in the error) but not decompressed:
	// there is no well-kept Go LZO decoder.
	LZO
)

// String returns the compression's name as kbuild spells it ("gzip",
// "xz", ...), or "uncompressed".
func (c Compression) String() string {
	switch c {
	case None:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case XZ:
		return "xz"
	case Zstd:
		return "zstd"
	case LZ4:
		return "lz4"
	case LZMA:
		return "lzma"
	case Bzip2:
		return "bzip2"
	case LZO:
		return "lzo"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// detect returns the compression of data from its magic bytes (the ones
// the x86 boot protocol documents for payloads), or None.
func detect(b []byte) Compression {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return XZ
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(b, []byte{0x02, 0x21, 0x4c, 0x18}):
		return LZ4 // legacy frame, as lz4 -l writes it
	case bytes.HasPrefix(b, []byte{0x04, 0x22, 0x4d, 0x18}):
		return LZ4 // current frame format
	case bytes.HasPrefix(b, []byte("BZh")) && len(b) > 3 && b[3] >= '1' && b[3] <= '9':
		return Bzip2
	case bytes.HasPrefix(b, []byte{0x89, 'L', 'Z', 'O', 0}):
		return LZO
	case len(b) >= 13 && b[0] == 0x5d && b[1] == 0 && b[2] == 0:
		// .lzma (LZMA_Alone): properties lc=3 lp=0 pb=2 (0x5d, what
		// "lzma -9" writes) and a little-endian dictionary size.
		return LZMA
	}
	return None
}

// decompress reads the stream c from r, refusing more than limit bytes of
// output. hint, if positive, is the expected output size.
func decompress(c Compression, r io.Reader, limit, hint int64) ([]byte, error) {
	if c == XZ {
		return decompressXZ(r, limit, hint)
	}
	if c == LZMA && hint > 0 {
		r = shrinkLZMADict(r, hint)
	}
	zr, closeFn, err := newDecompressor(c, r, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, wrapEOF(err))
	}
	if closeFn != nil {
		defer closeFn()
	}
	buf := newOutput(limit, hint)
	if err := buf.readFrom(zr); err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	if len(buf.b) == 0 {
		return nil, fmt.Errorf("%s: empty stream: %w", c, ErrTruncated)
	}
	return buf.b, nil
}

// output collects decompressed data, at most limit bytes. Its buffer grows
// by doubling but never past limit+1 bytes, so a stream that does not
// stop costs at most about 1.5 times the limit while it is being refused.
type output struct {
	b     []byte
	limit int64
}

func newOutput(limit, hint int64) *output {
	n := int64(64 << 10)
	if hint > 0 {
		n = hint + 1 // room to see the end of the stream without growing
	}
	return &output{b: make([]byte, 0, min(n, limit+1)), limit: limit}
}

// readFrom appends r's data until EOF.
func (o *output) readFrom(r io.Reader) error {
	for {
		if len(o.b) == cap(o.b) {
			if int64(len(o.b)) > o.limit {
				return fmt.Errorf("more than %d bytes: %w", o.limit, ErrTooLarge)
			}
			nb := make([]byte, len(o.b), min(2*int64(cap(o.b))+4096, o.limit+1))
			copy(nb, o.b)
			o.b = nb
		}
		n, err := r.Read(o.b[len(o.b):cap(o.b)])
		o.b = o.b[:len(o.b)+n]
		if int64(len(o.b)) > o.limit {
			return fmt.Errorf("more than %d bytes: %w", o.limit, ErrTooLarge)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decompression: %w", wrapEOF(err))
		}
	}
}

// newDecompressor returns a reader of c's output with decoder memory
// bounded by limit.
func newDecompressor(c Compression, r io.Reader, limit int64) (io.Reader, func(), error) {
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		zr.Multistream(false) // padding may follow the member
		return zr, nil, nil
	case Zstd:
		win := uint64(max(limit, zstd.MinWindowSize))
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(win), zstd.WithDecoderMaxWindow(win))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case LZ4:
		return lz4.NewReader(r), nil, nil
	case LZMA:
		zr, err := lzma.ReaderConfig{DictCap: dictCap(limit)}.NewReader(r)
		return zr, nil, err
	case Bzip2:
		return bzip2.NewReader(r), nil, nil
	case LZO:
		return nil, nil, fmt.Errorf("no decoder for lzo kernels (CONFIG_KERNEL_LZO): %w", ErrUnknownCompression)
	}
	return nil, nil, ErrUnknownCompression
}

// decompressXZ reads a whole .xz stream (compressed data is never larger
// than the limit on the output) and decodes it.
func decompressXZ(r io.Reader, limit, hint int64) ([]byte, error) {
	in, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if int64(len(in)) > limit {
		return nil, fmt.Errorf("xz: compressed stream over %d bytes: %w", limit, ErrTooLarge)
	}
	out, err := decodeXZ(in, limit, hint)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("xz: empty stream: %w", ErrTruncated)
	}
	return out, nil
}

// shrinkLZMADict lowers the dictionary size in an .lzma header to the
// known output size: no match reaches before the start of the output, so
// a kernel compressed with lzma -9 (64 MiB) needs no more than its size.
func shrinkLZMADict(r io.Reader, size int64) io.Reader {
	var h [13]byte // properties, dictionary size, uncompressed size
	n, err := io.ReadFull(r, h[:])
	if err != nil {
		return io.MultiReader(bytes.NewReader(h[:n]), r)
	}
	want := uint32(min(max(size, lzma.MinDictCap), 1<<31))
	if binary.LittleEndian.Uint32(h[1:]) > want {
		binary.LittleEndian.PutUint32(h[1:], want)
	}
	return io.MultiReader(bytes.NewReader(h[:]), r)
}

// dictCap bounds an LZMA dictionary by the output limit.
func dictCap(limit int64) int {
	return int(min(max(limit, lzma.MinDictCap), 1<<30))
}

// wrapEOF marks an unexpected end of the compressed stream as truncation.
func wrapEOF(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrTruncated) {
		return fmt.Errorf("%w: %w", err, ErrTruncated)
	}
	return err
}
