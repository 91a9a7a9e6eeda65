package diskio

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

func TestClip(t *testing.T) {
	p := make([]byte, 8)
	for _, c := range []struct {
		off, size int64
		n         int
		err       error
	}{
		{0, 10, 8, nil}, {2, 10, 8, nil}, {3, 10, 7, io.EOF}, {10, 10, 0, io.EOF}, {12, 10, 0, io.EOF},
	} {
		q, err := Clip(p, c.off, c.size)
		if len(q) != c.n || err != c.err {
			t.Errorf("Clip(8 bytes, %d, %d) = %d bytes, %v; want %d, %v", c.off, c.size, len(q), err, c.n, c.err)
		}
	}
}

func TestReadBlocks(t *testing.T) {
	disk := []byte("0123456789")
	var pieces []int64
	read := func(q []byte, blk, in int64) error {
		pieces = append(pieces, blk, in, int64(len(q)))
		copy(q, disk[blk*4+in:])
		return nil
	}
	p := make([]byte, 8)
	n, err := ReadBlocks(p, 3, 10, 4, read)
	if n != 7 || err != io.EOF || !bytes.Equal(p[:n], disk[3:]) {
		t.Fatalf("ReadBlocks = %d, %v, %q; want 7, EOF, %q", n, err, p[:n], disk[3:])
	}
	if want := []int64{0, 3, 1, 1, 0, 4, 2, 0, 2}; !slices.Equal(pieces, want) {
		t.Errorf("pieces (blk, in, len) = %v, want %v", pieces, want)
	}
	bad := errors.New("bad block")
	n, err = ReadBlocks(p, 0, 10, 4, func(q []byte, blk, in int64) error {
		if blk == 1 {
			return bad
		}
		return nil
	})
	if n != 4 || err != bad {
		t.Errorf("ReadBlocks with a failing block = %d, %v; want 4, %v", n, err, bad)
	}
}

func TestReadFull(t *testing.T) {
	r := bytes.NewReader([]byte("abcdef"))
	p := make([]byte, 3)
	if err := ReadFull(r, p, 3); err != nil || string(p) != "def" {
		t.Errorf("ReadFull at the end = %q, %v", p, err)
	}
	if err := ReadFull(r, p, 4); err != io.ErrUnexpectedEOF {
		t.Errorf("short ReadFull = %v, want io.ErrUnexpectedEOF", err)
	}
}
