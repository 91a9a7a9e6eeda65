package sparse

import (
	"bytes"
	"io"
	"math/rand"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		b := make([]byte, rng.Intn(100_000))
		for j := 0; j < rng.Intn(20); j++ {
			if len(b) == 0 {
				break
			}
			off := rng.Intn(len(b))
			rng.Read(b[off:min(len(b), off+rng.Intn(300))])
		}
		im := Decode(Encode(b), 1<<40)
		if im.Size() != int64(len(b)) || !bytes.Equal(im.Bytes(), b) {
			t.Fatalf("round trip of %d bytes failed", len(b))
		}
		if len(b) > 10 {
			off := rng.Int63n(int64(len(b)))
			p := make([]byte, rng.Intn(5000))
			n, err := im.ReadAt(p, off)
			want := b[off:min(int64(len(b)), off+int64(len(p)))]
			if n != len(want) || !bytes.Equal(p[:n], want) || (n < len(p) && err != io.EOF) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v", off, len(p), n, err)
			}
		}
	}
}

// FuzzDecode: any input decodes to an image that reads back without
// panicking, within the size cap.
func FuzzDecode(f *testing.F) {
	f.Add(Encode([]byte("hello\x00\x00world")))
	f.Fuzz(func(t *testing.T, in []byte) {
		im := Decode(in, 1<<20)
		if im.Size() > 1<<20 {
			t.Fatalf("size %d above the cap", im.Size())
		}
		b := im.Bytes()
		if int64(len(b)) != im.Size() {
			t.Fatal("Bytes length differs from Size")
		}
	})
}
