package pack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// debianBase returns the real Debian module directory and its release.
func debianBase(t *testing.T) (rel, dir string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	return rel, filepath.Join(root, "lib", "modules", rel)
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
	rel, dir := debianBase(t)
	modinfo := testenv.Tool(t, "modinfo")
	src := filepath.Join(dir, "kernel/fs/fat/vfat.ko")
	p := mkPack(t, "fat-extra", rel, map[string]string{"vfat.ko": src})
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
	p2 := mkPack(t, "fat-extra", rel, map[string]string{"vfat.ko": src})
	a, _ := os.ReadFile(p)
	b, _ := os.ReadFile(p2)
	if !bytes.Equal(a, b) {
		t.Fatal("pack is not reproducible")
	}
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
	rel, dir := debianBase(t)
	good := mkPack(t, "good", rel, map[string]string{"vfat.ko": filepath.Join(dir, "kernel/fs/fat/vfat.ko")})
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

// bombPack writes a pack holding one .ko.zst that decompresses to n zero
// bytes; listed is the sha256 pack.json gives for it (the real one, or a
// wrong one).
func bombPack(t *testing.T, n int64, rightSum bool) string {
	t.Helper()
	var ko bytes.Buffer
	zw, err := zstd.NewWriter(&ko, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(zero)) {
		zw.Write(zero[:min(int64(len(zero)), left)])
	}
	zw.Close()
	sum := sha256.Sum256(ko.Bytes())
	if !rightSum {
		sum[0] ^= 0xff
	}
	meta := Meta{Format: FormatVersion, Name: "bomb", KernelRelease: "6.12.0", Arch: "x86_64",
		Modules: []Module{{File: "bomb/x.ko.zst", Name: "x", SHA256: hex.EncodeToString(sum[:]), Vermagic: "6.12.0"}}}
	mb, _ := json.Marshal(meta)
	var buf bytes.Buffer
	pw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(pw)
	for _, e := range []struct {
		name string
		data []byte
	}{{MetaFile, mb}, {"bomb/x.ko.zst", ko.Bytes()}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg})
		tw.Write(e.data)
	}
	tw.Close()
	pw.Close()
	p := filepath.Join(t.TempDir(), "bomb.tar.zst")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A decompression bomb (a few KiB of pack holding a module of 2 GiB of
// zeros) is refused with a clear error, within bounded memory: with the
// right sha256 by the module size cap, with a wrong one before any
// decompression.
func TestOpenRefusesDecompressionBomb(t *testing.T) {
	for _, right := range []bool{false, true} {
		p := bombPack(t, 2<<30, right)
		if st, _ := os.Stat(p); st.Size() > 1<<20 {
			t.Fatalf("bomb pack is %d bytes", st.Size())
		}
		var err error
		n := testenv.Allocated(func() { _, err = Open(p) })
		if err == nil || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("right sha256 %v: %v", right, err)
		}
		want, limit := "sha256", uint64(64<<20)
		if right {
			want, limit = "exceeds", 700<<20
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("right sha256 %v: error %q does not say %q", right, err, want)
		}
		if n > limit {
			t.Errorf("right sha256 %v: %d MiB allocated, want at most %d MiB", right, n>>20, limit>>20)
		}
	}
}
