// Package sparse is a compact encoding of mostly-zero disk images, used by
// the image readers' fuzz targets: a 6 MiB VHDX or an 8 MiB ext4 image
// holds a few kilobytes that are not zero, so the fuzzer mutates the
// compact form, and the reader under test sees the expanded image through
// an io.ReaderAt without its zeros ever being allocated.
//
// The encoding is a uvarint image size, then chunks of (uvarint gap of
// zero bytes, uvarint length, length bytes) in file order. Decoding never
// fails: a truncated or malformed tail is ignored and chunks are clipped
// to the size, so every fuzzer input is some image.
package sparse

import (
	"encoding/binary"
	"errors"
	"sort"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

// minGap is the shortest run of zeros Encode turns into a gap.
const minGap = 64

// Encode returns the compact form of b.
func Encode(b []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(len(b)))
	pos := 0 // end of the previous chunk
	for i := 0; i < len(b); {
		if b[i] == 0 {
			i++
			continue
		}
		start := i
		zeros := 0
		for i < len(b) && zeros < minGap {
			if b[i] == 0 {
				zeros++
			} else {
				zeros = 0
			}
			i++
		}
		end := i - zeros
		out = binary.AppendUvarint(out, uint64(start-pos))
		out = binary.AppendUvarint(out, uint64(end-start))
		out = append(out, b[start:end]...)
		pos = end
	}
	return out
}

type chunk struct {
	off  int64
	data []byte
}

// Image is a decoded image. Its ReadAt is safe for concurrent use.
type Image struct {
	size   int64
	chunks []chunk
}

// Decode expands in into an image of at most maxSize bytes. The chunks
// alias in.
func Decode(in []byte, maxSize int64) *Image {
	size, n := binary.Uvarint(in)
	if n <= 0 {
		return &Image{}
	}
	im := &Image{size: int64(min(size, uint64(maxSize)))}
	in = in[n:]
	var pos uint64
	for len(in) > 0 {
		gap, n := binary.Uvarint(in)
		if n <= 0 {
			break
		}
		in = in[n:]
		l, n := binary.Uvarint(in)
		if n <= 0 {
			break
		}
		in = in[n:]
		l = min(l, uint64(len(in)))
		if gap > uint64(im.size) || pos+gap >= uint64(im.size) {
			break
		}
		pos += gap
		data := in[:l]
		in = in[l:]
		if rest := uint64(im.size) - pos; uint64(len(data)) > rest {
			data = data[:rest]
		}
		if len(data) > 0 {
			im.chunks = append(im.chunks, chunk{off: int64(pos), data: data})
		}
		pos += uint64(len(data))
	}
	return im
}

// Size returns the image size.
func (im *Image) Size() int64 { return im.size }

// ReadAt reads the expanded image.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("sparse: negative offset")
	}
	p, eof := diskio.Clip(p, off, im.size)
	clear(p)
	end := off + int64(len(p))
	i := sort.Search(len(im.chunks), func(i int) bool {
		c := im.chunks[i]
		return c.off+int64(len(c.data)) > off
	})
	for ; i < len(im.chunks) && im.chunks[i].off < end; i++ {
		c := im.chunks[i]
		lo, hi := max(c.off, off), min(c.off+int64(len(c.data)), end)
		copy(p[lo-off:hi-off], c.data[lo-c.off:hi-c.off])
	}
	return len(p), eof
}

// Bytes returns the expanded image (for tests of small images).
func (im *Image) Bytes() []byte {
	b := make([]byte, im.size)
	im.ReadAt(b, 0)
	return b
}
