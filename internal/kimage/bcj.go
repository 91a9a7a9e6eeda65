package kimage

import "encoding/binary"

// Branch/call/jump (BCJ) decoders of the .xz format: the encoder turned
// the relative targets of branch instructions into absolute ones (which
// compress better); decoding turns them back. Each runs over a whole
// block's output at once, start being the filter's start offset.

// x86MsbyteOK reports whether b can be the most significant byte of a
// converted x86 displacement (a small positive or negative number).
func x86MsbyteOK(b byte) bool { return b == 0x00 || b == 0xff }

// bcjX86 decodes the x86 filter: E8 (call) and E9 (jmp) rel32 operands,
// skipping candidates that overlap a previous E8/E9 byte in ways the
// encoder also skipped (the "prevMask" of the last three positions).
func bcjX86(buf []byte, start uint32) {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	prevMask := uint32(0)
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || x86MsbyteOK(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !x86MsbyteOK(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (start + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !x86MsbyteOK(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000) // sign-extend bit 24
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}

// bcjARM64 decodes the ARM64 filter: BL immediates and ADRP page offsets
// (the latter only within +/-512 MiB).
func bcjARM64(buf []byte, start uint32) {
	le := binary.LittleEndian
	for i := 0; i+4 <= len(buf); i += 4 {
		ins := le.Uint32(buf[i:])
		pc := start + uint32(i)
		switch {
		case ins>>26 == 0x25: // BL
			addr := ins - pc>>2
			le.PutUint32(buf[i:], 0x94000000|addr&0x03ffffff)
		case ins&0x9f000000 == 0x90000000: // ADRP
			addr := (ins>>29)&3 | (ins>>3)&0x1ffffc
			if (addr+0x020000)&0x1c0000 != 0 {
				continue
			}
			addr -= pc >> 12
			ins &= 0x9000001f
			ins |= (addr & 3) << 29
			ins |= (addr & 0x03fffc) << 3
			ins |= -(addr & 0x020000) & 0xe00000
			le.PutUint32(buf[i:], ins)
		}
	}
}
