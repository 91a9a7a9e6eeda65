package testenv

import (
	"bytes"
	"math/rand"
	"runtime"

	"github.com/klauspost/compress/gzip"
)

// RandBytes returns n pseudo-random bytes, the same for the same seed.
func RandBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// ZstdZeros returns a zstd frame of n zero bytes made of 128 KiB RLE
// blocks (4 bytes each: a 4 GiB frame is 128 KiB), for decompression
// bomb tests.
func ZstdZeros(n int64) []byte {
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38} // magic, no FCS, window 128 KiB
	const block = 128 << 10
	for n > 0 {
		size := min(n, block)
		n -= size
		h := uint32(size)<<3 | 1<<1 // RLE block
		if n == 0 {
			h |= 1 // last block
		}
		out = append(out, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return out
}

// GzipZeros returns n zero bytes gzip'ed (at the fastest level, written
// a MiB at a time), for decompression bomb tests.
func GzipZeros(n int64) []byte {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zeros := make([]byte, 1<<20)
	for ; n > 0; n -= 1 << 20 {
		zw.Write(zeros[:min(n, 1<<20)])
	}
	zw.Close()
	return gz.Bytes()
}

// Allocated returns the bytes allocated while fn runs (in the whole
// process, so measure without parallel tests).
func Allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
