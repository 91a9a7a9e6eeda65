package wslmsi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// Fixtures are real files built at test time:
//
//   - the kernel: Debian's vmlinuz (a real x86 bzImage) from the test
//     corpus (testenv.DebianModules);
//   - the modules image: a VHD made the way Microsoft makes one, mke2fs -d
//     over a small part of Debian's module tree, then qemu-img convert -O
//     vpc;
//   - MSIs built by wixl (msitools) laid out as WSL's
//     msipackage/package.wix.in lays them out (ProgramFiles64Folder\WSL\
//     tools\kernel and modules.vhd, File ids "kernel" and "modules.vhd",
//     an embedded cab1.cab); wixl compresses with MSZIP;
//   - an LZX MSI: the same layout around a real LZX:21 cabinet that
//     InstallShield made (in Debian's clamav-testfiles), whose members
//     gcab (libgcab, an LZX decoder independent of 7-Zip's) extracts as
//     the expected bytes. Debian has no LZX encoder (gcab, wixl, lcab and
//     Wine's cabinet.dll write MSZIP or no compression), so the cabinet
//     comes from there.

var (
	fixMu    sync.Mutex
	fixDir   string
	fixFiles = map[string]string{}
)

// fixture builds (once per test binary) the file named key with build,
// which writes it to the given path.
func fixture(t *testing.T, key string, build func(t *testing.T, path string)) string {
	t.Helper()
	fixMu.Lock()
	defer fixMu.Unlock()
	if p, ok := fixFiles[key]; ok {
		return p
	}
	if fixDir == "" {
		d, err := os.MkdirTemp("", "wslmsi-fixtures-")
		if err != nil {
			t.Fatal(err)
		}
		fixDir = d
	}
	p := filepath.Join(fixDir, key)
	build(t, p)
	fixFiles[key] = p
	return p
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

// debianKernel is Debian's vmlinuz.
func debianKernel(t *testing.T) string {
	t.Helper()
	root, _ := testenv.DebianModules(t)
	m, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(m) == 0 {
		testenv.Missing(t, "vmlinuz in %s/boot", root)
	}
	return m[0]
}

// makeVHD writes a dynamic VHD holding an ext4 filesystem with the tree
// at dir as its root, as Microsoft's scripts do (mke2fs -d, then qemu-img
// convert; -O vpc for a VHD).
func makeVHD(t *testing.T, dir, out string) {
	t.Helper()
	size := testenv.ImageSize(dir)
	img := out + ".img"
	blocks := size/1024 + 8192
	testenv.Run(t, "mke2fs", "-q", "-F", "-L", "", "-d", dir, "-b", "1024", "-t", "ext4", img, fmt.Sprint(blocks))
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", img, out)
	os.Remove(img)
}

// debianModulesVHD is a modules.vhd over a few of Debian's modules
// (flat layout: the image root is lib/modules/<release>).
func debianModulesVHD(t *testing.T) string {
	return fixture(t, "modules.vhd", func(t *testing.T, out string) {
		root, rel := testenv.DebianModules(t)
		src := filepath.Join(root, "lib", "modules", rel)
		stage := t.TempDir()
		for _, p := range []string{"kernel/fs/fat", "kernel/fs/isofs", "kernel/fs/binfmt_misc.ko", "modules.order", "modules.builtin"} {
			dst := filepath.Join(stage, p)
			os.MkdirAll(filepath.Dir(dst), 0o755)
			testenv.Run(t, "cp", "-r", filepath.Join(src, p), dst)
		}
		makeVHD(t, stage, out)
	})
}

// msiSpec describes a WSL-shaped MSI for wixl.
type msiSpec = buildtest.MSISpec

// buildMSI builds a WSL-shaped MSI (buildtest.WSLMSI).
func buildMSI(t *testing.T, s msiSpec) string {
	t.Helper()
	if s.ModulesName == "" && s.Modules != "" {
		s.ModulesName = ModulesVHD
	}
	return buildtest.WSLMSI(t, s)
}

// stockMSI is the MSZIP MSI over Debian's kernel and the modules VHD.
func stockMSI(t *testing.T) string {
	k, m := debianKernel(t), debianModulesVHD(t)
	return fixture(t, "wsl.2.6.1.0.x64.msi", func(t *testing.T, out string) {
		copyFile(t, buildMSI(t, msiSpec{Kernel: k, Modules: m}), out)
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// clamLZXCabinet returns the LZX:21 cabinet embedded in clamav-testfiles'
// clam_IScab_int.exe (an InstallShield setup).
func clamLZXCabinet(t *testing.T) []byte {
	t.Helper()
	src := "/usr/share/clamav-testfiles/clam_IScab_int.exe"
	b, err := os.ReadFile(src)
	if err != nil {
		testenv.Missing(t, "%s (apt-get install clamav-testfiles)", src)
	}
	i := bytes.Index(b, []byte("MSCF\x00\x00\x00\x00"))
	if i < 0 || len(b) < i+0x24 {
		t.Fatalf("%s: no cabinet", src)
	}
	size := int(binary.LittleEndian.Uint32(b[i+8:]))
	cab := b[i : i+size]
	// The first CFFOLDER's typeCompress: 0x1503 is LZX with a 2^21 window.
	if typ := binary.LittleEndian.Uint16(cab[0x24+6:]); typ != 0x1503 {
		t.Fatalf("%s: cabinet compression %#x, want LZX:21 (0x1503)", src, typ)
	}
	return cab
}

// lzxMSI builds an MSI whose cab1.cab is the real LZX cabinet: wixl
// builds the tables over gcab's extraction of its members (IScript.dll
// installs as tools\kernel, IUser.dll as tools\modules.vhd, the others
// under their names), then msibuild puts the LZX cabinet in place of
// wixl's MSZIP one. It returns the MSI and gcab's bytes of the two.
func lzxMSI(t *testing.T) (msi, kernel, modules string) {
	t.Helper()
	msi = fixture(t, "wsl.2.5.9.0.lzx.msi", func(t *testing.T, out string) {
		cab := clamLZXCabinet(t)
		dir := t.TempDir()
		cabPath := filepath.Join(dir, "lzx.cab")
		os.WriteFile(cabPath, cab, 0o644)
		members := filepath.Join(fixDir, "lzx-members")
		os.MkdirAll(members, 0o755)
		cmd := exec.Command(testenv.Tool(t, "gcab"), "-x", "-C", members, cabPath)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gcab -x: %v\n%s", err, b)
		}
		ents, _ := os.ReadDir(members)
		var files strings.Builder
		for _, e := range cabOrder(t, cabPath, ents) {
			name := map[string]string{"IScript.dll": KernelName, "IUser.dll": ModulesVHD}[e]
			if name == "" {
				name = e
			}
			copyFile(t, filepath.Join(members, e), filepath.Join(dir, "src-"+e))
			fmt.Fprintf(&files, "              <File Id=%q Name=%q Source=%q/>\n", e, name, "src-"+e)
		}
		wxs := filepath.Join(dir, "p.wxs")
		os.WriteFile(wxs, []byte(fmt.Sprintf(buildtest.WSLWXS, "2.5.9.0", files.String())), 0o644)
		for _, n := range []string{"wsl.exe", "wslservice.exe", "init", "bsdtar", "libd3d12.so"} {
			os.WriteFile(filepath.Join(dir, n), []byte("stand-in\n"), 0o644)
		}
		c := exec.Command(testenv.Tool(t, "wixl"), "-a", "x64", "-o", out, wxs)
		c.Dir = dir
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("wixl: %v\n%s", err, b)
		}
		testenv.Run(t, "msibuild", out, "-a", "cab1.cab", cabPath)
	})
	members := filepath.Join(fixDir, "lzx-members")
	return msi, filepath.Join(members, "IScript.dll"), filepath.Join(members, "IUser.dll")
}

// cabOrder returns the member names in the cabinet's order (7-Zip's
// listing), so that the File table's sequence follows the cabinet.
func cabOrder(t *testing.T, cab string, ents []os.DirEntry) []string {
	t.Helper()
	members, err := parseListing([]byte(testenv.Run(t, "7z", "l", "-slt", "-tCab", cab)))
	if err != nil || len(members) != len(ents) {
		t.Fatalf("cabinet listing: %d members for %d files, %v", len(members), len(ents), err)
	}
	var out []string
	for _, m := range members {
		out = append(out, m.path)
	}
	return out
}

// modifyMSI copies msi and runs SQL on the copy with msibuild.
func modifyMSI(t *testing.T, msi string, queries ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(msi))
	copyFile(t, msi, out)
	for _, q := range queries {
		testenv.Run(t, "msibuild", out, "-q", q)
	}
	return out
}

// entries lists a directory ("" entries if it does not exist).
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
