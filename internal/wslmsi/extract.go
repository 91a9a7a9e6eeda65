package wslmsi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// cabinet is an embedded cabinet stream copied out of the MSI, with 7-Zip's
// listing of it.
type cabinet struct {
	stream, path string
	members      []cabMember
}

// cabMember is one file of a cabinet as 7-Zip lists it.
type cabMember struct {
	path   string
	size   int64
	method string
}

// extract builds the cache entry of the MSI: the kernel and modules image
// and meta.json, in a temporary directory renamed to entry at the end.
// Nothing is left behind on failure. Unless replace is set (the entry is
// damaged), an entry another process completed meanwhile is kept.
func extract(ctx context.Context, msi, sum, entry string, replace bool, log *progress.Reporter) error {
	t, err := findTools()
	if err != nil {
		return err
	}
	lay, err := t.readLayout(ctx, msi)
	if err != nil {
		return err
	}
	kernel, modules, err := lay.targets()
	if err != nil {
		return fmt.Errorf("%s: %w", msi, err)
	}
	d, err := atomicfile.CreateDir(entry, replace)
	if errors.Is(err, atomicfile.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Abort()
	work, err := os.MkdirTemp(filepath.Dir(entry), ".work-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	m := &meta{Schema: metaSchema, MSISHA256: sum, MSIName: filepath.Base(msi), ProductVersion: lay.productVersion, Extractor: t.versions(ctx)}
	if st, err := os.Stat(msi); err == nil {
		m.MSISize = st.Size()
	}
	cabs := map[string]*cabinet{}
	for i, f := range []msiFile{kernel, modules} {
		out := filepath.Join(d.Tmp, []string{KernelName, modules.name}[i])
		fm, method, err := t.member(ctx, msi, lay, f, cabs, work, out)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", msi, f.pathString(), err)
		}
		m.Compression = method
		log.Printf("wslmsi: %s: %s, %s, sha256 %s (%s)", filepath.Base(msi), f.pathString(), progress.Bytes(fm.Size), fm.SHA256, method)
		if i == 0 {
			m.Kernel = fm
		} else {
			m.Modules = fm
		}
	}
	if err := m.write(filepath.Join(d.Tmp, metaFile)); err != nil {
		return err
	}
	if err := d.Commit(); err != nil && !errors.Is(err, atomicfile.ErrExists) {
		return err
	}
	return nil
}

// member extracts file f from its cabinet to out (copying and listing the
// cabinet stream first if needed) and checks its size and MD5.
func (t *tools) member(ctx context.Context, msi string, lay *layout, f msiFile, cabs map[string]*cabinet, work, out string) (fileMeta, string, error) {
	stream, err := lay.cabinetStream(f)
	if err != nil {
		return fileMeta{}, "", err
	}
	cab := cabs[stream]
	if cab == nil {
		if cab, err = t.openCabinet(ctx, msi, stream, filepath.Join(work, "cab"+strconv.Itoa(len(cabs)))); err != nil {
			return fileMeta{}, "", err
		}
		cabs[stream] = cab
	}
	m, err := cab.find(f)
	if err != nil {
		return fileMeta{}, "", err
	}
	fm, err := t.extractMember(ctx, cab, f, out)
	if err != nil {
		return fileMeta{}, "", err
	}
	return fm, m.method, nil
}

// openCabinet copies an embedded cabinet stream to path and lists it.
func (t *tools) openCabinet(ctx context.Context, msi, stream, path string) (*cabinet, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	err = t.run(ctx, f, t.msiinfo, "extract", msi, stream)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("reading the cabinet stream %s: %w", stream, err)
	}
	out, err := t.output(ctx, t.sevenZip, "l", "-slt", "-tCab", "-sccUTF-8", "--", path)
	if err != nil {
		return nil, fmt.Errorf("cabinet stream %s (truncated or damaged?): %w", stream, err)
	}
	members, err := parseListing(out)
	if err != nil {
		return nil, fmt.Errorf("cabinet stream %s: %w", stream, err)
	}
	return &cabinet{stream: stream, path: path, members: members}, nil
}

// parseListing reads 7-Zip's technical listing (-slt): after the
// "----------" line, one block of "Key = Value" lines per member.
func parseListing(out []byte) ([]cabMember, error) {
	_, body, ok := bytes.Cut(out, []byte("\n----------\n"))
	if !ok {
		return nil, errors.New("7-Zip listed no files")
	}
	var members []cabMember
	var cur *cabMember
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		switch {
		case !ok:
			cur = nil
		case k == "Path":
			members = append(members, cabMember{path: v})
			cur = &members[len(members)-1]
		case cur != nil && k == "Size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("7-Zip listing: size %q of %s", v, cur.path)
			}
			cur.size = n
		case cur != nil && k == "Method":
			cur.method = v
		}
	}
	return members, sc.Err()
}

// find checks that exactly one member is f (by its File key, which 7-Zip
// is then asked for literally), no other member has that base name, and
// its size is the File table's.
func (c *cabinet) find(f msiFile) (cabMember, error) {
	var hit *cabMember
	for i := range c.members {
		m := &c.members[i]
		if path.Base(strings.ReplaceAll(m.path, `\`, "/")) != f.key {
			continue
		}
		if hit != nil || m.path != f.key {
			return cabMember{}, fmt.Errorf("cabinet %s holds more than one member named %s (%q)", c.stream, f.key, m.path)
		}
		hit = m
	}
	switch {
	case hit == nil:
		return cabMember{}, fmt.Errorf("cabinet %s has no member %s (the File key)", c.stream, f.key)
	case hit.size != f.size:
		return cabMember{}, fmt.Errorf("cabinet member %s is %d bytes, the File table says %d", f.key, hit.size, f.size)
	}
	return *hit, nil
}

// extractMember decompresses one member to out through 7-Zip's standard
// output (7-Zip writes no file), hashing it on the way.
func (t *tools) extractMember(ctx context.Context, c *cabinet, f msiFile, out string) (fileMeta, error) {
	w, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fileMeta{}, err
	}
	sh, mh := sha256.New(), md5.New()
	cw := &countWriter{}
	err = t.run(ctx, io.MultiWriter(w, sh, mh, cw), t.sevenZip, "e", "-so", "-tCab", "-bd", "-spd", "-sccUTF-8", "--", c.path, f.key)
	if serr := w.Sync(); err == nil {
		err = serr
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return fileMeta{}, fmt.Errorf("decompressing %s from cabinet %s: %w", f.key, c.stream, err)
	case cw.n != f.size:
		return fileMeta{}, fmt.Errorf("decompressing %s from cabinet %s gave %d bytes, want %d", f.key, c.stream, cw.n, f.size)
	case f.md5 != nil && !bytes.Equal(mh.Sum(nil), f.md5):
		return fileMeta{}, fmt.Errorf("MD5 %x of the decompressed %s differs from the MSI's MsiFileHash %x (damaged cabinet?)", mh.Sum(nil), f.key, f.md5)
	}
	return fileMeta{Name: filepath.Base(out), MSIPath: f.pathString(), FileKey: f.key, Size: cw.n,
		SHA256: hex.EncodeToString(sh.Sum(nil)), MD5Checked: f.md5 != nil}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
