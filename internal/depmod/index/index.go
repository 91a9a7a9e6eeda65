// Package index writes kmod's binary module indexes (modules.dep.bin,
// modules.alias.bin, ...): a Patricia trie of 7-bit ASCII keys, each key
// holding a list of (priority, value) pairs, serialised as described in
// FORMATS.md A.6 (format version 2.1).
//
// Nodes are written in post-order (children before their parent, the root
// last), which is what kmod 30 writes; WritePreOrder gives kmod ≥ 34's
// layout. Both are read by every libkmod.
package index

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// Magic and version of the index format.
const (
	Magic   = 0xB007F457
	Version = 0x00020001
)

// Node reference flags.
const (
	flagPrefix = 0x80000000
	flagValues = 0x40000000
	flagChilds = 0x20000000
)

// Trie is an index under construction. The zero value is an empty index.
type Trie struct {
	root node
	n    int
}

type value struct {
	prio uint32
	val  string
}

type kid struct {
	c byte
	n *node
}

type node struct {
	prefix string
	kids   []kid // sorted by c
	values []value
	// size and offset are filled in while writing.
	size, total uint32
}

// Len returns the number of values added.
func (t *Trie) Len() int { return t.n }

// checkASCII returns an error if s holds a NUL or a byte ≥ 0x80.
func checkASCII(what, s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c >= 0x80 {
			return fmt.Errorf("%s %q: byte %#02x at offset %d: only 7-bit ASCII without NUL is supported", what, s, c, i)
		}
	}
	return nil
}

// Add inserts value under key with priority prio. Among values of one key,
// lower priorities come first; among equal priorities the most recently
// added comes first. Duplicates are kept. Keys and values must be 7-bit
// ASCII without NUL bytes.
func (t *Trie) Add(key, val string, prio uint32) error {
	if err := checkASCII("key", key); err != nil {
		return err
	}
	if err := checkASCII("value", val); err != nil {
		return err
	}
	t.n++
	n := &t.root
	i := 0
	for {
		// Split the node if its prefix and the rest of the key differ.
		j := 0
		for j < len(n.prefix) && i+j < len(key) && n.prefix[j] == key[i+j] {
			j++
		}
		if j < len(n.prefix) {
			child := &node{prefix: n.prefix[j+1:], kids: n.kids, values: n.values}
			n.kids = []kid{{c: n.prefix[j], n: child}}
			n.prefix, n.values = n.prefix[:j], nil
		}
		i += len(n.prefix)
		if i == len(key) {
			n.addValue(val, prio)
			return nil
		}
		c := key[i]
		k := n.kid(c)
		if k < len(n.kids) && n.kids[k].c == c {
			n = n.kids[k].n
			i++
			continue
		}
		nn := &node{prefix: key[i+1:]}
		nn.addValue(val, prio)
		n.kids = append(n.kids, kid{})
		copy(n.kids[k+1:], n.kids[k:])
		n.kids[k] = kid{c: c, n: nn}
		return nil
	}
}

// kid returns the position of the first child with character >= c.
func (n *node) kid(c byte) int {
	lo, hi := 0, len(n.kids)
	for lo < hi {
		m := (lo + hi) / 2
		if n.kids[m].c < c {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (n *node) addValue(val string, prio uint32) {
	k := 0
	for k < len(n.values) && n.values[k].prio < prio {
		k++
	}
	n.values = append(n.values, value{})
	copy(n.values[k+1:], n.values[k:])
	n.values[k] = value{prio: prio, val: val}
}

// flags returns the reference flags of n.
func (n *node) flags() uint32 {
	var f uint32
	if n.prefix != "" {
		f |= flagPrefix
	}
	if len(n.values) > 0 {
		f |= flagValues
	}
	if len(n.kids) > 0 {
		f |= flagChilds
	}
	return f
}

// measure fills size and total for n and its subtree.
func (n *node) measure() {
	var s uint32
	if n.prefix != "" {
		s += uint32(len(n.prefix)) + 1
	}
	if len(n.kids) > 0 {
		s += 2 + 4*uint32(int(n.kids[len(n.kids)-1].c)-int(n.kids[0].c)+1)
	}
	if len(n.values) > 0 {
		s += 4
		for _, v := range n.values {
			s += 4 + uint32(len(v.val)) + 1
		}
	}
	n.size, n.total = s, s
	for _, k := range n.kids {
		k.n.measure()
		n.total += k.n.total
	}
}

// writer serialises nodes, tracking the file offset.
type writer struct {
	w   *bufio.Writer
	off uint32
	buf [4]byte
}

func (w *writer) u32(v uint32) {
	binary.BigEndian.PutUint32(w.buf[:], v)
	w.w.Write(w.buf[:])
	w.off += 4
}

func (w *writer) str(s string) {
	w.w.WriteString(s)
	w.w.WriteByte(0)
	w.off += uint32(len(s)) + 1
}

// body writes n's own encoding given its children's references.
func (w *writer) body(n *node, childRefs []uint32) {
	if n.prefix != "" {
		w.str(n.prefix)
	}
	if len(n.kids) > 0 {
		first, last := n.kids[0].c, n.kids[len(n.kids)-1].c
		w.w.WriteByte(first)
		w.w.WriteByte(last)
		w.off += 2
		k := 0
		for c := int(first); c <= int(last); c++ {
			if k < len(n.kids) && int(n.kids[k].c) == c {
				w.u32(childRefs[k])
				k++
			} else {
				w.u32(0)
			}
		}
	}
	if len(n.values) > 0 {
		w.u32(uint32(len(n.values)))
		for _, v := range n.values {
			w.u32(v.prio)
			w.str(v.val)
		}
	}
}

// postOrder writes n's children, then n, and returns n's reference.
func (w *writer) postOrder(n *node) uint32 {
	var refs []uint32
	if len(n.kids) > 0 {
		refs = make([]uint32, len(n.kids))
		for i, k := range n.kids {
			refs[i] = w.postOrder(k.n)
		}
	}
	ref := w.off | n.flags()
	w.body(n, refs)
	return ref
}

// preOrder writes n, then its children, and returns n's reference.
func (w *writer) preOrder(n *node) uint32 {
	ref := w.off | n.flags()
	var refs []uint32
	if len(n.kids) > 0 {
		refs = make([]uint32, len(n.kids))
		off := w.off + n.size
		for i, k := range n.kids {
			refs[i] = off | k.n.flags()
			off += k.n.total
		}
	}
	w.body(n, refs)
	for _, k := range n.kids {
		w.preOrder(k.n)
	}
	return ref
}

// maxOffset is the largest offset a node reference can hold.
const maxOffset = 0x0FFFFFFF

func (t *Trie) write(out io.Writer, pre bool) (int64, error) {
	t.root.measure()
	if uint64(t.root.total)+12 > maxOffset {
		return 0, fmt.Errorf("index: %d bytes exceed the format's 256 MiB limit", t.root.total)
	}
	w := &writer{w: bufio.NewWriterSize(out, 64*1024)}
	w.u32(Magic)
	w.u32(Version)
	if pre {
		w.u32(12 | t.root.flags())
		w.preOrder(&t.root)
	} else {
		// The root is the last node written.
		w.u32((12 + t.root.total - t.root.size) | t.root.flags())
		w.postOrder(&t.root)
	}
	return int64(w.off), w.w.Flush()
}

// Bytes returns the index in kmod 30's post-order layout.
func (t *Trie) Bytes() ([]byte, error) {
	var b bytes.Buffer
	if _, err := t.write(&b, false); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteTo writes the index in kmod 30's post-order layout (children before
// their parent, the root last).
func (t *Trie) WriteTo(out io.Writer) (int64, error) { return t.write(out, false) }

// WritePreOrder writes the index in kmod ≥ 34's pre-order layout (root at
// offset 12).
func (t *Trie) WritePreOrder(out io.Writer) (int64, error) { return t.write(out, true) }
