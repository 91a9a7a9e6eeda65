package index

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The worked example of FORMATS.md A.6.9 (bytes checked there against
// kmod 30's modprobe).
func TestWorkedExample(t *testing.T) {
	var tr Trie
	tr.Add("ab", "x", 0)
	tr.Add("ac", "y", 1)
	var pre bytes.Buffer
	if _, err := tr.WritePreOrder(&pre); err != nil {
		t.Fatal(err)
	}
	wantPre := unhex(t, `B007F457 00020001 2000000C 6161 20000012 6263 4000001C 40000026
		00000001 00000000 7800 00000001 00000001 7900`)
	if !bytes.Equal(pre.Bytes(), wantPre) {
		t.Errorf("pre-order:\n got %x\nwant %x", pre.Bytes(), wantPre)
	}
	post, err := tr.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	// N2 at 0x0C, N3 at 0x16, N1 at 0x20, root at 0x2A.
	wantPost := unhex(t, `B007F457 00020001 2000002A
		00000001 00000000 7800 00000001 00000001 7900
		6263 4000000C 40000016 6161 20000020`)
	if !bytes.Equal(post, wantPost) {
		t.Errorf("post-order:\n got %x\nwant %x", post, wantPost)
	}
}

func TestEmpty(t *testing.T) {
	var tr Trie
	b, err := tr.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, "B007F457 00020001 0000000C"); !bytes.Equal(b, want) {
		t.Fatalf("got %x, want %x", b, want)
	}
}

func TestRejectsNonASCII(t *testing.T) {
	var tr Trie
	if err := tr.Add("caf\xc3\xa9", "x", 0); err == nil {
		t.Error("non-ASCII key accepted")
	}
	if err := tr.Add("k", "v\x80", 0); err == nil {
		t.Error("non-ASCII value accepted")
	}
	if tr.Len() != 0 {
		t.Errorf("rejected values were counted: %d", tr.Len())
	}
}

// lookup reads a serialised index the way libkmod's exact search does and
// returns all values of key as "prio:value".
func lookup(t *testing.T, b []byte, key string) []string {
	t.Helper()
	u32 := func(off uint32) uint32 { return binary.BigEndian.Uint32(b[off:]) }
	if u32(0) != Magic || u32(4) != Version {
		t.Fatalf("bad header %x", b[:8])
	}
	ref := u32(8)
	i := 0
	for {
		off := ref & 0x0FFFFFFF
		if ref&flagPrefix != 0 {
			end := bytes.IndexByte(b[off:], 0)
			p := string(b[off : off+uint32(end)])
			off += uint32(end) + 1
			if !strings.HasPrefix(key[i:], p) {
				return nil
			}
			i += len(p)
		}
		var first, last byte
		childs := off
		if ref&flagChilds != 0 {
			first, last = b[off], b[off+1]
			childs = off + 2
			off += 2 + 4*(uint32(last)-uint32(first)+1)
		}
		if i == len(key) {
			if ref&flagValues == 0 {
				return nil
			}
			var out []string
			n := u32(off)
			off += 4
			for ; n > 0; n-- {
				p := u32(off)
				off += 4
				end := bytes.IndexByte(b[off:], 0)
				out = append(out, fmt.Sprintf("%d:%s", p, b[off:off+uint32(end)]))
				off += uint32(end) + 1
			}
			return out
		}
		c := key[i]
		if ref&flagChilds == 0 || c < first || c > last {
			return nil
		}
		ref = u32(childs + 4*uint32(c-first))
		if ref == 0 {
			return nil
		}
		i++
	}
}

// TestRoundTrip inserts random keys sharing many prefixes and reads every
// key back from both layouts with an independent reader.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	want := map[string][]string{}
	type add struct {
		k, v string
		p    uint32
	}
	var adds []add
	for i := 0; i < 3000; i++ {
		n := 1 + rng.Intn(12)
		k := make([]byte, n)
		for j := range k {
			k[j] = "abc-_:*"[rng.Intn(7)]
		}
		adds = append(adds, add{string(k), fmt.Sprintf("v%d", i), uint32(rng.Intn(4))})
	}
	var tr Trie
	for _, a := range adds {
		if err := tr.Add(a.k, a.v, a.p); err != nil {
			t.Fatal(err)
		}
	}
	// Expected order: ascending priority, newest first among equals.
	for i := len(adds) - 1; i >= 0; i-- {
		a := adds[i]
		want[a.k] = append(want[a.k], fmt.Sprintf("%d:%s", a.p, a.v))
	}
	for k, vs := range want {
		sortStable(vs)
		want[k] = vs
	}
	post, err := tr.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var pre bytes.Buffer
	tr.WritePreOrder(&pre)
	if len(post) != pre.Len() {
		t.Fatalf("post-order %d bytes, pre-order %d", len(post), pre.Len())
	}
	for k, vs := range want {
		if got := lookup(t, post, k); !reflect.DeepEqual(got, vs) {
			t.Fatalf("post-order %q: got %v want %v", k, got, vs)
		}
		if got := lookup(t, pre.Bytes(), k); !reflect.DeepEqual(got, vs) {
			t.Fatalf("pre-order %q: got %v want %v", k, got, vs)
		}
	}
	if got := lookup(t, post, "zzz"); got != nil {
		t.Fatalf("missing key found: %v", got)
	}
}

// sortStable orders "prio:value" strings by priority, keeping the order of
// equal priorities.
func sortStable(vs []string) {
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && vs[j][0] < vs[j-1][0]; j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
}
