package ext4img

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/wsl-modules/wsl-modules-action/internal/image/internal/diskio"
)

// dirCacheMax bounds the memory the directory cache holds (about the name
// bytes plus 48 bytes per entry). A new directory evicts others until it
// fits, so the directory used last is always cached: walking a directory
// and then looking up each of its entries stays linear even for the
// largest one (a maxDirSize directory of one-byte names costs about
// 70 MiB).
const dirCacheMax = 128 << 20

// DirEntry is one name in a directory.
type DirEntry struct {
	// Name is the entry name.
	Name string
	// Ino is the inode number.
	Ino uint32
}

// dirData is a parsed directory: its parent (from "..") and its other
// entries sorted by name.
type dirData struct {
	parent uint32
	ents   []DirEntry
	multi  map[uint32]bool // inodes with more than one name here
	cost   int64
}

// lookup finds name by binary search.
func (d *dirData) lookup(name string) (uint32, bool) {
	i := sort.Search(len(d.ents), func(i int) bool { return d.ents[i].Name >= name })
	if i < len(d.ents) && d.ents[i].Name == name {
		return d.ents[i].Ino, true
	}
	return 0, false
}

// dirCache keeps parsed directories by inode number, up to dirCacheMax.
type dirCache struct {
	mu     sync.RWMutex
	m      map[uint32]*dirData
	bytes  int64
	max    int64        // budget: dirCacheMax, smaller in tests
	parsed atomic.Int64 // directories parsed (for tests)
}

// dir returns the parsed directory in, from the cache when possible.
func (f *FS) dir(in *Inode) (*dirData, error) {
	f.dirs.mu.RLock()
	d := f.dirs.m[in.Ino]
	f.dirs.mu.RUnlock()
	if d != nil {
		return d, nil
	}
	d, err := f.parseDir(in)
	if err != nil {
		return nil, err
	}
	f.dirs.put(in.Ino, d)
	return d, nil
}

// put caches d, evicting other directories until it fits the budget.
func (c *dirCache) put(ino uint32, d *dirData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[uint32]*dirData{}
	}
	if _, ok := c.m[ino]; ok {
		return
	}
	for k, old := range c.m {
		if c.bytes+d.cost <= c.max {
			break
		}
		delete(c.m, k)
		c.bytes -= old.cost
	}
	c.m[ino] = d
	c.bytes += d.cost
}

// DirEntries returns a directory's entries other than "." and "..",
// sorted by name. Hashed (htree) directories are read through their leaf
// blocks. The directory must be well formed: "." and ".." first (and
// nowhere else), no holes, no duplicate names, and names that are valid
// UTF-8 without '/' or NUL (io/fs paths must be UTF-8). The returned
// slice is the caller's.
func (f *FS) DirEntries(in *Inode) ([]DirEntry, error) {
	d, err := f.dir(in)
	if err != nil {
		return nil, err
	}
	return append([]DirEntry(nil), d.ents...), nil
}

// parseDir reads every block of directory in.
func (f *FS) parseDir(in *Inode) (*dirData, error) {
	if !in.Mode.IsDir() {
		return nil, f.corrupt("inode %d is not a directory", in.Ino)
	}
	f.dirs.parsed.Add(1)
	c, err := f.content(in)
	if err != nil {
		return nil, err
	}
	p := dirParser{f: f, dir: in.Ino, seen: map[string]bool{}, inos: map[uint32]bool{}}
	blk := make([]byte, f.bs)
	for off := int64(0); off < in.Size; off += f.bs {
		n, disk := c.segment(off)
		if disk < 0 || n < f.bs {
			return nil, f.corrupt("directory inode %d: hole or unwritten extent at block %d", in.Ino, off/f.bs)
		}
		if err := diskio.ReadFull(f.r, blk, disk); err != nil {
			return nil, fmt.Errorf("%sdirectory inode %d: reading block %d: %w", f.where(), in.Ino, off/f.bs, err)
		}
		if err := p.block(blk, off/f.bs); err != nil {
			return nil, err
		}
	}
	if p.count < 2 {
		return nil, f.corrupt("directory inode %d has no \".\" and \"..\" entries", in.Ino)
	}
	sort.Slice(p.d.ents, func(i, j int) bool { return p.d.ents[i].Name < p.d.ents[j].Name })
	return &p.d, nil
}

// dirParser checks and collects the entries of one directory.
type dirParser struct {
	f     *FS
	dir   uint32
	d     dirData
	seen  map[string]bool
	inos  map[uint32]bool
	count int // entries with an inode so far, "." and ".." included
}

// recLen decodes a directory entry's rec_len (64 KiB blocks store 65536
// as 0 or 65535, and use the low two bits as bits 16-17).
func recLen(v uint16, bs int64) int64 {
	if bs >= 1<<16 && (v == 0 || v == 0xFFFF) {
		return 1 << 16
	}
	return int64(v&0xFFFC) | int64(v&3)<<16
}

// block parses one directory block.
func (p *dirParser) block(b []byte, blk int64) error {
	f := p.f
	bs := int64(len(b))
	for pos := int64(0); pos < bs; {
		if pos+8 > bs {
			return f.corrupt("directory inode %d: block %d: entry at byte %d crosses the block end", p.dir, blk, pos)
		}
		ino := le.Uint32(b[pos:])
		rl := recLen(le.Uint16(b[pos+4:]), bs)
		nl := int64(b[pos+6])
		if !f.filetype {
			nl = int64(le.Uint16(b[pos+6:]))
		}
		if rl < 8 || rl%4 != 0 || rl > bs-pos || (ino != 0 && (nl == 0 || 8+nl > rl)) {
			return f.corrupt("directory inode %d: block %d: bad entry at byte %d (rec_len %d, name_len %d)", p.dir, blk, pos, rl, nl)
		}
		if ino != 0 {
			if err := p.entry(ino, string(b[pos+8:pos+8+nl]), blk); err != nil {
				return err
			}
		}
		pos += rl
	}
	return nil
}

// entry checks one named entry and records it.
func (p *dirParser) entry(ino uint32, name string, blk int64) error {
	f := p.f
	if ino > f.inodes {
		return f.corrupt("directory inode %d: entry %q points at inode %d (of %d)", p.dir, name, ino, f.inodes)
	}
	p.count++
	switch {
	case p.count == 1:
		if name != "." || ino != p.dir {
			return f.corrupt("directory inode %d: first entry is %q (inode %d), not \".\"", p.dir, name, ino)
		}
		return nil
	case p.count == 2:
		if name != ".." {
			return f.corrupt("directory inode %d: second entry is %q, not \"..\"", p.dir, name)
		}
		p.d.parent = ino
		return nil
	case name == "." || name == "..":
		return f.corrupt("directory inode %d: block %d: a second %q entry (inode %d)", p.dir, blk, name, ino)
	case strings.ContainsAny(name, "/\x00"):
		return f.corrupt("directory inode %d: invalid name %q (contains '/' or NUL)", p.dir, name)
	case !utf8.ValidString(name):
		// io/fs paths are UTF-8: such a name could be listed but not opened.
		return f.corrupt("directory inode %d: name %q is not valid UTF-8", p.dir, name)
	case p.seen[name]:
		return f.corrupt("directory inode %d: duplicate name %q", p.dir, name)
	case ino == rootIno:
		return f.corrupt("directory inode %d: entry %q links to the root directory", p.dir, name)
	}
	p.seen[name] = true
	if p.inos[ino] {
		if p.d.multi == nil {
			p.d.multi = map[uint32]bool{}
		}
		p.d.multi[ino] = true
	}
	p.inos[ino] = true
	p.d.ents = append(p.d.ents, DirEntry{Name: name, Ino: ino})
	p.d.cost += int64(len(name)) + 48
	return nil
}

// Child reads the inode of entry e of directory dir. A directory child
// must name dir as its parent ("..") and have no other name in dir, so the
// directory graph is a tree: hard-linked directories and loops are refused
// as corruption.
func (f *FS) Child(dir *Inode, e DirEntry) (*Inode, error) {
	pd, err := f.dir(dir)
	if err != nil {
		return nil, err
	}
	return f.child(dir, pd, e)
}

// child is Child with dir's parsed entries pd.
func (f *FS) child(dir *Inode, pd *dirData, e DirEntry) (*Inode, error) {
	in, err := f.ReadInode(e.Ino)
	if err != nil {
		return nil, err
	}
	if !in.Mode.IsDir() {
		return in, nil
	}
	d, err := f.dir(in)
	if err != nil {
		return nil, err
	}
	if d.parent != dir.Ino || in.Ino == dir.Ino || pd.multi[in.Ino] {
		return nil, f.corrupt("directory inode %d (%q in directory inode %d, whose \"..\" is inode %d): a hard-linked directory or a loop", in.Ino, e.Name, dir.Ino, d.parent)
	}
	return in, nil
}
