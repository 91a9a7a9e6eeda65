package kimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// arm64 Image header (Documentation/arch/arm64/booting.rst): 64 bytes,
// "ARM\x64" at 0x38. With the EFI stub the image also starts with "MZ".
const (
	arm64MagicOff = 0x38
	arm64Magic    = 0x644d5241 // "ARM\x64", little endian
)

// isArm64Image reports whether head starts with an arm64 Image header.
func isArm64Image(head []byte) bool {
	return len(head) >= 64 && binary.LittleEndian.Uint32(head[arm64MagicOff:]) == arm64Magic
}

// EFI zboot header (drivers/firmware/efi/libstub/zboot-header.S): "MZ",
// "zimg", u32 payload offset, u32 payload size (without the size trailer
// of zstd payloads), 8 reserved bytes, NUL-terminated compression name.
const (
	zbootPayloadOff  = 8
	zbootPayloadSize = 12
	zbootCompName    = 0x18
)

// isZboot reports whether head is an EFI zboot image.
func isZboot(head []byte) bool {
	return len(head) >= zbootCompName+8 && string(head[:2]) == "MZ" && string(head[4:8]) == "zimg"
}

// openZboot decompresses the arm64 Image of an EFI zboot image.
func openZboot(r io.ReaderAt, size int64, head []byte, limit int64) (*File, error) {
	le := binary.LittleEndian
	off := int64(le.Uint32(head[zbootPayloadOff:]))
	length := int64(le.Uint32(head[zbootPayloadSize:]))
	name := head[zbootCompName : zbootCompName+8]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if off > size || size-off < length || length == 0 {
		return nil, fmt.Errorf("zboot payload at %#x+%#x beyond the end of the file (%d bytes): %w",
			off, length, size, ErrTruncated)
	}
	payload := io.NewSectionReader(r, off, length)
	magic := make([]byte, 16)
	if _, err := payload.ReadAt(magic, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("zboot payload: %w", err)
	}
	c := detect(magic)
	if c == None || c.String() != string(name) {
		return nil, fmt.Errorf("zboot payload: compression %q, data starts %x: %w",
			name, magic[:6], ErrUnknownCompression)
	}
	data, err := decompress(c, payload, limit, 0)
	if err != nil {
		return nil, fmt.Errorf("zboot payload: %w", err)
	}
	if !isArm64Image(data) {
		return nil, fmt.Errorf("zboot payload (%s) is not an arm64 Image: %w", c, ErrNotKernel)
	}
	return openInner(data, FormatZboot, c, limit)
}
