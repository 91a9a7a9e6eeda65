package pack

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

var (
	baseOnce sync.Once
	baseTree *modtree.Tree
	baseErr  error
)

// debianBase loads the real Debian module tree once.
func debianBase(t *testing.T) (*modtree.Tree, string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	dir := filepath.Join(root, "lib", "modules", rel)
	baseOnce.Do(func() { baseTree, baseErr = modtree.LoadDir(dir, rel) })
	if baseErr != nil {
		t.Fatal(baseErr)
	}
	return baseTree, dir
}

// without returns a copy of tree without the named modules.
func without(t *modtree.Tree, names ...string) *modtree.Tree {
	drop := map[string]bool{}
	for _, n := range names {
		drop[n] = true
	}
	out := &modtree.Tree{Release: t.Release, Symvers: t.Symvers}
	for _, e := range t.Modules {
		if !drop[e.Name] {
			out.Modules = append(out.Modules, e)
		}
	}
	return out
}

func mkPack(t *testing.T, name, release string, mods map[string]string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+Ext)
	if _, err := Create(out, CreateOptions{Name: name, Version: "1.0", KernelRelease: release, Modules: mods}); err != nil {
		t.Fatal(err)
	}
	return out
}

func open(t *testing.T, p string) *Pack {
	t.Helper()
	pk, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func TestCreateOpenRoundTripMatchesModinfo(t *testing.T) {
	base, dir := debianBase(t)
	modinfo := testenv.Tool(t, "modinfo")
	src := filepath.Join(dir, "kernel/fs/fat/vfat.ko")
	p := mkPack(t, "fat-extra", base.Release, map[string]string{"vfat.ko": src})
	pk := open(t, p)
	if len(pk.Meta.Modules) != 1 {
		t.Fatalf("modules: %+v", pk.Meta.Modules)
	}
	md := pk.Meta.Modules[0]
	if md.File != "fat-extra/vfat.ko" || md.Name != "vfat" || pk.Meta.Arch != "x86_64" {
		t.Fatalf("meta: %+v arch %s", md, pk.Meta.Arch)
	}
	for field, got := range map[string]string{"vermagic": md.Vermagic, "srcversion": md.SrcVersion} {
		want, err := exec.Command(modinfo, "-F", field, src).Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSuffix(string(want), "\n") != got {
			t.Errorf("%s = %q, modinfo says %q", field, got, want)
		}
	}
	// Needs carry the CRCs kmod reads from __versions.
	dump, err := exec.Command(testenv.Tool(t, "modprobe"), "--dump-modversions", src).Output()
	if err != nil {
		t.Fatal(err)
	}
	crcs := map[string]string{}
	for _, n := range md.Needs {
		crcs[n.Name] = n.CRC
	}
	for _, line := range strings.Split(strings.TrimSpace(string(dump)), "\n") {
		f := strings.Fields(line)
		if f[1] == "module_layout" {
			continue
		}
		if crcs[f[1]] != f[0] {
			t.Errorf("need %s crc %q, modprobe says %s", f[1], crcs[f[1]], f[0])
		}
	}
	// Reproducible: same inputs, same bytes.
	p2 := mkPack(t, "fat-extra", base.Release, map[string]string{"vfat.ko": src})
	a, _ := os.ReadFile(p)
	b, _ := os.ReadFile(p2)
	if !bytes.Equal(a, b) {
		t.Fatal("pack is not reproducible")
	}
}

func corruptVersion(t *testing.T, data []byte) string {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section("__versions")
	if s == nil {
		t.Fatal("no __versions")
	}
	for off := uint64(0); off+64 <= s.Size; off += 64 {
		e := data[s.Offset+off : s.Offset+off+64]
		name := string(bytes.TrimRight(e[8:], "\x00"))
		if name == "module_layout" {
			continue
		}
		e[0] ^= 0xff
		return name
	}
	t.Fatal("empty __versions")
	return ""
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", substr)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("error does not wrap ErrCorrupt: %v", err)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q\ndoes not contain %q", err, substr)
	}
}

func TestOpenRefusesBadArchives(t *testing.T) {
	base, dir := debianBase(t)
	good := mkPack(t, "good", base.Release, map[string]string{"vfat.ko": filepath.Join(dir, "kernel/fs/fat/vfat.ko")})
	data, _ := os.ReadFile(good)
	write := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "p.tar.zst")
		os.WriteFile(p, b, 0o644)
		return p
	}
	rawTar := func(entries map[string]string) []byte {
		var buf bytes.Buffer
		zw, _ := zstd.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for n, body := range entries {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
			tw.Write([]byte(body))
		}
		tw.Close()
		zw.Close()
		return buf.Bytes()
	}
	cases := map[string]struct {
		data []byte
		want string
	}{
		"truncated": {data[:len(data)/2], "good"},
		"garbage":   {[]byte("this is not a pack"), "magic number mismatch"},
		"traversal": {rawTar(map[string]string{"pack.json": "{}", "../evil.ko": "x"}), `entry "../evil.ko": path traversal`},
		"absolute":  {rawTar(map[string]string{"/etc/evil.ko": "x"}), "absolute path"},
		"no-meta":   {rawTar(map[string]string{"x/a.ko": "x"}), "no pack.json"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Open(write(c.data))
			if err == nil {
				t.Fatal("bad pack accepted")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("not ErrCorrupt: %v", err)
			}
			if name != "truncated" && !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}
