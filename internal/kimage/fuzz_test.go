package kimage_test

import (
	"bytes"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// fuzzLimit caps decompression in the fuzz targets: a fuzzed bomb costs
// at most about this much per input.
const fuzzLimit = 16 << 20

// fuzzing reports whether the test binary runs with -test.fuzz.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}

// tinyBzImage wraps payload in a minimal bzImage setup header (one setup
// sector, boot protocol 2.15).
func tinyBzImage(payload []byte) []byte {
	b := make([]byte, 1024)
	le := binary.LittleEndian
	b[0x1f1] = 1
	le.PutUint16(b[0x1fe:], 0xaa55)
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], 0x020f)
	le.PutUint32(b[0x24c:], uint32(len(payload)))
	return append(b, payload...)
}

// tinyArm64 prefixes a flat image with an arm64 Image header.
func tinyArm64(img []byte) []byte {
	h := make([]byte, 64)
	binary.LittleEndian.PutUint32(h[0x38:], 0x644d5241)
	return append(h, img...)
}

// fuzzSeeds returns small structured inputs reaching every path.
func fuzzSeeds() [][]byte {
	syms := synthSyms(20)
	flat, secs := synthTables(syms, synthLayout{crcs: true}, 64)
	flags, fsecs := synthTables(syms, synthLayout{flags: true, crcs: true}, 64)
	elfImg := synthELF(flat, secs)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(elfImg)
	zw.Close()
	zs, _ := zstd.NewWriter(nil)
	zst := zs.EncodeAll(elfImg, nil)
	var l4 bytes.Buffer
	lw := lz4.NewWriter(&l4)
	lw.Apply(lz4.LegacyOption(true))
	lw.Write(elfImg)
	lw.Close()
	withSize := func(b []byte) []byte { return append(bytes.Clone(b), le32(len(elfImg))...) }
	return [][]byte{
		elfImg,
		synthELF(flags, fsecs),
		tinyArm64(flat),
		tinyArm64(flags),
		tinyBzImage(gz.Bytes()),
		tinyBzImage(withSize(zst)),
		tinyBzImage(withSize(l4.Bytes())),
		zboot(gz.Bytes(), "gzip", false),
		gz.Bytes(),
		rodataELF(ikconfigBlob([]byte("CONFIG_MODULES=y\n"), "IKCFG_ED")),
		tinyArm64(ikconfigBlob([]byte("CONFIG_MODULES=y\n"), "IKCFG_ED")),
	}
}

// FuzzOpen opens arbitrary bytes as a kernel image and reads its exports:
// no panic, and never more than the limit decompressed.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	if !fuzzing() { // real kernels as regression seeds (too big to mutate well)
		for _, p := range realKernelSeeds() {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := kimage.NewFile(bytes.NewReader(data), int64(len(data)), &kimage.Options{MaxSize: fuzzLimit})
		if err != nil {
			return
		}
		if kf.Size > fuzzLimit && kf.Size > int64(len(data)) {
			t.Fatalf("kernel of %d bytes over the limit", kf.Size)
		}
		_ = kf.Release()
		if cfg, err := kf.Config(); err == nil && len(cfg) > 16<<20 {
			t.Fatalf("embedded config of %d bytes over the limit", len(cfg))
		}
		et, err := kf.Exports()
		if err != nil {
			return
		}
		for _, s := range et.Symbols {
			if s.Name == "" {
				t.Fatalf("export without a name in %v", et.Layout)
			}
		}
		if len(et.Symbols)*et.Entry.Size > len(data) && kf.Compression == kimage.None {
			t.Fatalf("%d symbols from %d bytes", len(et.Symbols), len(data))
		}
	})
}

// realKernelSeeds lists the cached test kernels' images, if built.
func realKernelSeeds() []string {
	m, _ := filepath.Glob(filepath.Join(testenv.CacheDir(), "kernel-cache", "kernel", "*", "bzImage"))
	a, _ := filepath.Glob(filepath.Join(testenv.CacheDir(), "kernel-cache", "kernel", "*", "Image"))
	return append(m, a...)
}
