package kimage

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
)

// ErrNoConfig is returned by Config for a kernel built without
// CONFIG_IKCONFIG (no embedded configuration).
var ErrNoConfig = errors.New("no embedded kernel config (built without CONFIG_IKCONFIG)")

// maxConfigSize bounds the decompressed embedded config (Microsoft's is
// about 150 KiB).
const maxConfigSize = 16 << 20

// The markers kernel/configs.c puts around the gzip of the .config.
var (
	ikcfgStart = []byte("IKCFG_ST")
	ikcfgEnd   = []byte("IKCFG_ED")
)

// Config returns the kernel's own .config, which CONFIG_IKCONFIG embeds
// (gzip-compressed, between the IKCFG_ST and IKCFG_ED markers, in .rodata;
// what /proc/config.gz serves at run time). It returns ErrNoConfig when
// the kernel has none.
func (f *File) Config() ([]byte, error) {
	data, err := f.rodata()
	if err != nil {
		return nil, f.errorf("config: %w", err)
	}
	if data == nil {
		return nil, f.errorf("no .rodata section: %w", ErrNoConfig)
	}
	for off := 0; ; {
		i := bytes.Index(data[off:], ikcfgStart)
		if i < 0 {
			return nil, f.errorf("%w", ErrNoConfig)
		}
		off += i + len(ikcfgStart)
		// The marker string itself also appears in code that looks for
		// it; only a gzip stream right after it is the config.
		if !bytes.HasPrefix(data[off:], []byte{0x1f, 0x8b}) {
			continue
		}
		cfg, err := gunzipConfig(data[off:])
		if err != nil {
			return nil, f.errorf("embedded config: %w", err)
		}
		return cfg, nil
	}
}

// gunzipConfig decompresses the one gzip member at the start of b, which
// IKCFG_ED must follow.
func gunzipConfig(b []byte) ([]byte, error) {
	r := bytes.NewReader(b)
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	out, err := io.ReadAll(io.LimitReader(zr, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxConfigSize {
		return nil, fmt.Errorf("more than %d bytes: %w", maxConfigSize, ErrTooLarge)
	}
	rest := b[len(b)-r.Len():]
	if !bytes.HasPrefix(rest, ikcfgEnd) {
		return nil, errors.New("IKCFG_ED does not follow the gzip stream")
	}
	return out, nil
}

// rodata returns the bytes the config can be in: .rodata of an ELF (the
// whole image for a raw arm64 Image); nil when an ELF has no .rodata.
func (f *File) rodata() ([]byte, error) {
	if f.raw != nil && f.elf == nil {
		return f.raw, nil
	}
	for _, s := range f.elf.Sections {
		if s.Name != ".rodata" || s.Type == elf.SHT_NOBITS {
			continue
		}
		if s.Size > uint64(f.limit) {
			return nil, fmt.Errorf(".rodata of %d bytes: %w", s.Size, ErrTooLarge)
		}
		return s.Data()
	}
	if f.raw != nil {
		return f.raw, nil
	}
	return nil, nil
}
