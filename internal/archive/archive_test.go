package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
)

type entry struct {
	name, body, link string
	typ              byte
}

func mkTar(t *testing.T, entries []entry, gz bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	if !gz {
		return buf.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(buf.Bytes())
	zw.Close()
	return z.Bytes()
}

func TestExtractGood(t *testing.T) {
	data := mkTar(t, []entry{
		{name: "top/", typ: tar.TypeDir},
		{name: "top/Makefile", body: "all:\n", typ: tar.TypeReg},
		{name: "top/arch/x86/configs/config-wsl", body: "CONFIG_X=y\n", typ: tar.TypeReg},
		{name: "top/Microsoft/config-wsl", link: "../arch/x86/configs/config-wsl", typ: tar.TypeSymlink},
		{name: "top/hard", link: "top/Makefile", typ: tar.TypeLink},
	}, true)
	dest := filepath.Join(t.TempDir(), "src")
	res, err := Extract(context.Background(), bytes.NewReader(data), dest, Options{StripComponents: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.TopDir != "top" || res.Files != 2 || res.Links != 2 {
		t.Fatalf("result %+v", res)
	}
	b, err := os.ReadFile(filepath.Join(dest, "Microsoft", "config-wsl"))
	if err != nil || string(b) != "CONFIG_X=y\n" {
		t.Fatalf("symlinked config: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "hard")); string(b) != "all:\n" {
		t.Fatalf("hard link content %q", b)
	}
	// Compare with GNU tar's view of the same archive.
	if tarBin, err := exec.LookPath("tar"); err == nil {
		ref := t.TempDir()
		cmd := exec.Command(tarBin, "-xzf", "-", "-C", ref, "--strip-components=1")
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tar: %v %s", err, out)
		}
		diff, _ := exec.Command("diff", "-r", "--no-dereference", ref, dest).CombinedOutput()
		if len(diff) > 0 {
			t.Fatalf("differs from GNU tar:\n%s", diff)
		}
	}
}

func TestExtractRefusesUnsafe(t *testing.T) {
	cases := map[string][]entry{
		"dotdot":        {{name: "top/../../etc/passwd", body: "x", typ: tar.TypeReg}},
		"absolute":      {{name: "/etc/passwd", body: "x", typ: tar.TypeReg}},
		"symlink-abs":   {{name: "top/l", link: "/etc", typ: tar.TypeSymlink}},
		"symlink-out":   {{name: "top/l", link: "../../x", typ: tar.TypeSymlink}},
		"hardlink-out":  {{name: "top/h", link: "../etc/passwd", typ: tar.TypeLink}},
		"device":        {{name: "top/dev", typ: tar.TypeChar}},
		"through-link":  {{name: "top/d", typ: tar.TypeDir}, {name: "top/d/l", link: "..", typ: tar.TypeSymlink}, {name: "top/x", link: "d/l/..", typ: tar.TypeSymlink}},
		"write-through": {{name: "top/l", link: ".", typ: tar.TypeSymlink}, {name: "top/l/../../../escape", body: "x", typ: tar.TypeReg}},
		// The link's literal parent d/d/d is three levels deep, but d -> .
		// puts the link at the root, where ../../.. leaves the tree.
		"parent-through-link": {{name: "top/d", link: ".", typ: tar.TypeSymlink}, {name: "top/d/d/d/l", link: "../../../etc/passwd", typ: tar.TypeSymlink}},
		// sub/l -> ../x is inside; a hard link to it at the root is the
		// same link one level up, where ../x is outside.
		"hardlink-to-symlink": {{name: "top/sub/", typ: tar.TypeDir}, {name: "top/sub/l", link: "../x", typ: tar.TypeSymlink}, {name: "top/h", link: "top/sub/l", typ: tar.TypeLink}},
		// l -> b/c/../.. is inside while b is a directory; b -> . makes
		// it one level too high (c exists, so l resolves to ..).
		"later-link-changes-earlier": {{name: "top/l", link: "b/c/../..", typ: tar.TypeSymlink}, {name: "top/b", link: ".", typ: tar.TypeSymlink}, {name: "top/c/", typ: tar.TypeDir}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out")
			_, err := Extract(context.Background(), bytes.NewReader(mkTar(t, entries, false)), dest, Options{StripComponents: 1, Name: "evil.tar"})
			if err == nil {
				t.Fatal("unsafe archive accepted")
			}
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("error %v does not wrap ErrUnsafe", err)
			}
			if _, serr := os.Lstat(dest); !os.IsNotExist(serr) {
				t.Fatalf("destination left behind: %v", serr)
			}
			left, _ := os.ReadDir(filepath.Dir(dest))
			if len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
}

func TestExtractTruncatedLeavesNothing(t *testing.T) {
	data := mkTar(t, []entry{
		{name: "top/a", body: string(bytes.Repeat([]byte("kernel"), 50000)), typ: tar.TypeReg},
		{name: "top/b", body: "b", typ: tar.TypeReg},
	}, true)
	dest := filepath.Join(t.TempDir(), "out")
	_, err := Extract(context.Background(), bytes.NewReader(data[:len(data)/2]), dest, Options{})
	if err == nil {
		t.Fatal("truncated archive accepted")
	}
	if _, serr := os.Lstat(dest); !os.IsNotExist(serr) {
		t.Fatal("partial tree left behind")
	}
}

func TestExtractRefusesExisting(t *testing.T) {
	dest := t.TempDir()
	_, err := Extract(context.Background(), bytes.NewReader(mkTar(t, []entry{{name: "a", body: "x", typ: tar.TypeReg}}, false)), dest, Options{})
	if err == nil {
		t.Fatal("overwrote existing destination without Force")
	}
}

// TestExtractLinksThroughLinks checks that legitimate links through
// directory links still unpack, and land where the kernel puts them.
func TestExtractLinksThroughLinks(t *testing.T) {
	data := mkTar(t, []entry{
		{name: "top/arch/x86/include/", typ: tar.TypeDir},
		{name: "top/arch/x86/include/a.h", body: "a\n", typ: tar.TypeReg},
		{name: "top/d", link: ".", typ: tar.TypeSymlink},
		{name: "top/inc", link: "arch/x86/include", typ: tar.TypeSymlink},
		// Written through d -> . (so at the root) and inc.
		{name: "top/d/d/f", body: "f\n", typ: tar.TypeReg},
		{name: "top/d/d/l", link: "inc/a.h", typ: tar.TypeSymlink},
		{name: "top/inc/up", link: "../../../d/f", typ: tar.TypeSymlink},
		{name: "top/h", link: "top/inc/a.h", typ: tar.TypeLink},
	}, false)
	dest := filepath.Join(t.TempDir(), "src")
	if _, err := Extract(context.Background(), bytes.NewReader(data), dest, Options{StripComponents: 1}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"f": "f\n", "l": "a\n", "arch/x86/include/up": "f\n", "h": "a\n"} {
		if b, err := os.ReadFile(filepath.Join(dest, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", p, b, err, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dest, "l")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("l: want a symlink at the root (d -> .), got %v %v", fi, err)
	}
}
