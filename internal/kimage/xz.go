package kimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"

	"github.com/ulikunitz/xz/lzma"
)

// The .xz container (The .xz File Format, version 1.2.1) with filter
// chains of an optional branch converter (BCJ) and LZMA2. Kernels are
// compressed with a BCJ filter for their architecture (scripts/xz_wrap.sh:
// --x86, --arm64, ...), which github.com/ulikunitz/xz does not support; it
// decodes the LZMA2 data here, the container and the BCJ filters are
// handled below. Decoding works on the whole compressed stream in memory,
// so BCJ runs once over each block's output.

// xz filter IDs.
const (
	xzFilterX86   = 0x04
	xzFilterARM64 = 0x0a
	xzFilterLZMA2 = 0x21
)

var errXZCorrupt = errors.New("corrupt xz data")

// decodeXZ decodes the first .xz stream of data, producing at most limit
// bytes; hint, if positive, is the expected size.
func decodeXZ(data []byte, limit, hint int64) ([]byte, error) {
	check, err := xzStreamHeader(data)
	if err != nil {
		return nil, err
	}
	out := newOutput(limit, hint)
	pos := 12
	for {
		if pos >= len(data) {
			return nil, fmt.Errorf("xz: stream ends before its index: %w", ErrTruncated)
		}
		if data[pos] == 0 { // index indicator: no more blocks
			return out.b, nil
		}
		n, err := xzBlock(data[pos:], check, out, limit, hint)
		if err != nil {
			return nil, fmt.Errorf("xz: block at %#x: %w", pos, err)
		}
		pos += n
	}
}

// xzStreamHeader checks the stream header and returns the check type.
func xzStreamHeader(data []byte) (byte, error) {
	if len(data) < 12 {
		return 0, fmt.Errorf("xz stream header: %w", ErrTruncated)
	}
	if !bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		return 0, fmt.Errorf("xz: bad magic: %w", errXZCorrupt)
	}
	flags := data[6:8]
	if flags[0] != 0 || flags[1]&0xf0 != 0 || crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(data[8:]) {
		return 0, fmt.Errorf("xz: bad stream flags: %w", errXZCorrupt)
	}
	return flags[1], nil
}

// xzChain is a parsed block header.
type xzChain struct {
	bcj        int    // 0 or a BCJ filter ID
	bcjStart   uint32 // BCJ start offset
	dict       int64  // LZMA2 dictionary size
	compSize   int64  // -1 if not recorded
	uncompSize int64  // -1 if not recorded
}

// xzBlock decodes one block at the start of b into out and returns its
// length (header, data, padding and check).
func xzBlock(b []byte, check byte, out *output, limit, hint int64) (int, error) {
	hsize := (int(b[0]) + 1) * 4
	if len(b) < hsize {
		return 0, fmt.Errorf("block header: %w", ErrTruncated)
	}
	if crc32.ChecksumIEEE(b[:hsize-4]) != binary.LittleEndian.Uint32(b[hsize-4:]) {
		return 0, fmt.Errorf("block header CRC: %w", errXZCorrupt)
	}
	chain, err := xzParseChain(b[1 : hsize-4])
	if err != nil {
		return 0, err
	}
	start := len(out.b)
	consumed, err := xzLZMA2(b[hsize:], chain, out, limit, hint)
	if err != nil {
		return 0, err
	}
	block := out.b[start:]
	if (chain.compSize >= 0 && chain.compSize != int64(consumed)) ||
		(chain.uncompSize >= 0 && chain.uncompSize != int64(len(block))) {
		return 0, fmt.Errorf("block sizes differ from its header: %w", errXZCorrupt)
	}
	switch chain.bcj {
	case xzFilterX86:
		bcjX86(block, chain.bcjStart)
	case xzFilterARM64:
		bcjARM64(block, chain.bcjStart)
	}
	n := hsize + consumed
	for n%4 != 0 { // block padding
		if n >= len(b) || b[n] != 0 {
			return 0, fmt.Errorf("block padding: %w", errXZCorrupt)
		}
		n++
	}
	csize := xzCheckSize(check)
	if len(b)-n < csize {
		return 0, fmt.Errorf("block check: %w", ErrTruncated)
	}
	if err := xzVerify(check, block, b[n:n+csize]); err != nil {
		return 0, err
	}
	return n + csize, nil
}

// xzParseChain parses block flags, sizes and filter flags.
func xzParseChain(h []byte) (xzChain, error) {
	c := xzChain{compSize: -1, uncompSize: -1}
	flags := h[0]
	if flags&0x3c != 0 {
		return c, fmt.Errorf("reserved block flags %#x: %w", flags, errXZCorrupt)
	}
	r := xzFields{b: h[1:]}
	if flags&0x40 != 0 {
		c.compSize = int64(r.varint())
	}
	if flags&0x80 != 0 {
		c.uncompSize = int64(r.varint())
	}
	nf := int(flags&3) + 1
	for i := range nf {
		id, props := r.varint(), r.bytes(int(r.varint()))
		if r.err != nil {
			break
		}
		last := i == nf-1
		switch {
		case last && id == xzFilterLZMA2 && len(props) == 1 && props[0] <= 40:
			c.dict = xzDictSize(props[0])
		case !last && c.bcj == 0 && (id == xzFilterX86 || id == xzFilterARM64) && (len(props) == 0 || len(props) == 4):
			c.bcj = int(id)
			if len(props) == 4 {
				c.bcjStart = binary.LittleEndian.Uint32(props)
			}
		default:
			return c, fmt.Errorf("xz filter %#x (%d of %d): %w", id, i+1, nf, ErrUnknownCompression)
		}
	}
	if r.err != nil || c.compSize == 0 || c.compSize > 1<<62 || c.uncompSize > 1<<62 {
		return c, fmt.Errorf("block header: %w", errXZCorrupt)
	}
	for _, p := range r.b { // header padding
		if p != 0 {
			return c, fmt.Errorf("block header padding: %w", errXZCorrupt)
		}
	}
	return c, nil
}

// xzLZMA2 decodes the LZMA2 data at the start of b into out and returns
// how many bytes of b it used.
func xzLZMA2(b []byte, c xzChain, out *output, limit, hint int64) (int, error) {
	dict := min(c.dict, limit)
	if hint > 0 {
		dict = min(dict, hint) // a match never reaches before the start
	}
	rd := bytes.NewReader(b) // an io.ByteReader: the decoder reads no further than it needs
	zr, err := lzma.Reader2Config{DictCap: int(max(dict, lzma.MinDictCap))}.NewReader2(rd)
	if err != nil {
		return 0, fmt.Errorf("lzma2: %w", wrapEOF(err))
	}
	if err := out.readFrom(zr); err != nil {
		return 0, fmt.Errorf("lzma2: %w", err)
	}
	return len(b) - rd.Len(), nil
}

// xzDictSize decodes the LZMA2 dictionary size property.
func xzDictSize(p byte) int64 {
	if p == 40 {
		return 1<<32 - 1
	}
	return int64(2|p&1) << (p/2 + 11)
}

// xzCheckSize is the size of a check of type t.
func xzCheckSize(t byte) int {
	if t == 0 {
		return 0
	}
	return 4 << ((t - 1) / 3)
}

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzVerify checks a block's uncompressed data against its check field.
func xzVerify(t byte, data, sum []byte) error {
	var ok bool
	switch t {
	case 0x01:
		ok = crc32.ChecksumIEEE(data) == binary.LittleEndian.Uint32(sum)
	case 0x04:
		ok = crc64.Checksum(data, crc64Table) == binary.LittleEndian.Uint64(sum)
	case 0x0a:
		h := sha256.Sum256(data)
		ok = bytes.Equal(h[:], sum)
	default:
		ok = true // reserved check types are skipped, as the format allows
	}
	if !ok {
		return fmt.Errorf("xz check (type %#x) mismatch: %w", t, errXZCorrupt)
	}
	return nil
}

// xzFields reads the variable-length fields of a block header.
type xzFields struct {
	b   []byte
	err error
}

func (r *xzFields) varint() uint64 {
	var v uint64
	for i := 0; i < 9; i++ {
		if r.err != nil || len(r.b) == 0 {
			r.err = errXZCorrupt
			return 0
		}
		c := r.b[0]
		r.b = r.b[1:]
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if i > 0 && c == 0 {
				r.err = errXZCorrupt // not the shortest encoding
			}
			return v
		}
	}
	r.err = errXZCorrupt
	return 0
}

func (r *xzFields) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = errXZCorrupt
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}
