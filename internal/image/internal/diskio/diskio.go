// Package diskio holds the reading steps that the readers of the image
// formats (vhd, vhdx, ext4img, sparse) share: exact reads of the
// underlying file, and the bounds and block walk of a ReadAt.
package diskio

import "io"

// ReadFull reads exactly len(p) bytes of r at off. io.EOF together with a
// full read is success (io.ReaderAt allows it at the end of the input); a
// short read without another error is io.ErrUnexpectedEOF.
func ReadFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Clip bounds a ReadAt of p at off (not negative) on data of size bytes.
// It returns the part of p before the end of the data and the error the
// ReadAt returns once that part is read: io.EOF when p reaches past the
// end (an off at or past it leaves an empty part), else nil.
func Clip(p []byte, off, size int64) ([]byte, error) {
	if off >= size {
		return p[:0], io.EOF
	}
	if int64(len(p)) > size-off {
		return p[:size-off], io.EOF
	}
	return p, nil
}

// ReadBlocks is the ReadAt of p at off (not negative) on a disk of size
// bytes stored in blocks of bs bytes: it clips p (see Clip) and calls
// block for each piece q of it that lies in one block, blk being the
// block's index and in the piece's offset in the block. It stops at the
// first error of block, returning the bytes read before the piece and the
// error.
func ReadBlocks(p []byte, off, size, bs int64, block func(q []byte, blk, in int64) error) (int, error) {
	p, eof := Clip(p, off, size)
	n := 0
	for len(p) > 0 {
		blk, in := off/bs, off%bs
		k := min(int64(len(p)), bs-in)
		if err := block(p[:k], blk, in); err != nil {
			return n, err
		}
		p = p[k:]
		n += int(k)
		off += k
	}
	return n, eof
}
