package wslmsi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// checkStock compares the extracted files with their sources and checks
// the entry holds exactly them and meta.json.
func checkStock(t *testing.T, st *Stock, kernel, modules, modulesName string) {
	t.Helper()
	if st.ModulesName != modulesName || filepath.Base(st.Modules) != modulesName || filepath.Base(st.Kernel) != KernelName {
		t.Errorf("names: %+v", st)
	}
	if got, want := testenv.SHA256File(t, st.Kernel), testenv.SHA256File(t, kernel); got != want || st.KernelSHA256 != want {
		t.Errorf("kernel sha256 %s (recorded %s), want %s", got, st.KernelSHA256, want)
	}
	if got, want := testenv.SHA256File(t, st.Modules), testenv.SHA256File(t, modules); got != want || st.ModulesSHA256 != want {
		t.Errorf("%s sha256 %s (recorded %s), want %s", modulesName, got, st.ModulesSHA256, want)
	}
	if got := strings.Join(entries(t, st.Dir), " "); got != strings.Join(sortedNames(KernelName, metaFile, modulesName), " ") {
		t.Errorf("entry %s holds %s", st.Dir, got)
	}
	if got := entries(t, filepath.Dir(st.Dir)); len(got) != 1 || got[0] != filepath.Base(st.Dir) {
		t.Errorf("%s holds %v: temporary files left?", filepath.Dir(st.Dir), got)
	}
}

func sortedNames(n ...string) []string {
	for i := range n {
		for j := i + 1; j < len(n); j++ {
			if n[j] < n[i] {
				n[i], n[j] = n[j], n[i]
			}
		}
	}
	return n
}

func readMeta(t *testing.T, st *Stock) meta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(st.Dir, metaFile))
	if err != nil {
		t.Fatal(err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// An MSZIP installer laid out as WSL's, with a real kernel and modules
// VHD: both come out byte for byte, checked against the MSI's MD5s, into
// a cache entry keyed by the MSI's sha256; the second Open is a cache hit.
func TestOpenMSZIP(t *testing.T) {
	msi := stockMSI(t)
	cache := t.TempDir()
	var log bytes.Buffer
	st, err := Open(context.Background(), msi, cache, progress.New(&log))
	if err != nil {
		t.Fatal(err)
	}
	checkStock(t, st, debianKernel(t), debianModulesVHD(t), ModulesVHD)
	if st.Compression != "MSZip" || st.ProductVersion != "2.6.1.0" || st.MSISHA256 != testenv.SHA256File(t, msi) || st.MSIName != filepath.Base(msi) || st.WSLVersion != "" {
		t.Errorf("stock %+v", st)
	}
	if st.Dir != filepath.Join(cache, CacheSubdir, st.MSISHA256) {
		t.Errorf("entry %s", st.Dir)
	}
	m := readMeta(t, st)
	if !m.Kernel.MD5Checked || !m.Modules.MD5Checked || m.Kernel.MSIPath != `ProgramFiles64Folder\WSL\tools\kernel` || m.Modules.FileKey != "modules.vhd" ||
		!strings.Contains(m.Extractor, "msiinfo") || !strings.Contains(m.Extractor, "7-Zip") {
		t.Errorf("meta %+v", m)
	}
	if out := testenv.Run(t, "qemu-img", "info", st.Modules); !strings.Contains(out, "file format: vpc") {
		t.Errorf("qemu-img info:\n%s", out)
	}
	before, _ := os.Stat(st.Kernel)
	log.Reset()
	st2, err := Open(context.Background(), msi, cache, progress.New(&log))
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(st2.Kernel)
	if !strings.Contains(log.String(), "from the cache") || !after.ModTime().Equal(before.ModTime()) || *st2 != *st {
		t.Errorf("second Open not from the cache:\n%s", log.String())
	}
}

// A real LZX:21 cabinet (made by InstallShield) inside the WSL layout:
// 7-Zip's output equals gcab's (libgcab's LZX decoder) and the MD5s wixl
// computed from gcab's output.
func TestOpenLZX(t *testing.T) {
	msi, kernel, modules := lzxMSI(t)
	if out := testenv.Run(t, "7z", "l", "-slt", msi); !strings.Contains(out, "Method = LZX:21") {
		t.Fatalf("the fixture is not LZX:\n%s", out)
	}
	st, err := Open(context.Background(), msi, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkStock(t, st, kernel, modules, ModulesVHD)
	if m := readMeta(t, st); st.Compression != "LZX:21" || !m.Kernel.MD5Checked || !m.Modules.MD5Checked || m.Kernel.FileKey != "IScript.dll" {
		t.Errorf("stock %+v, meta %+v", st, m)
	}
}

// Builds with the nested layout ship artifacts.vhd.
func TestOpenArtifactsVHD(t *testing.T) {
	msi := buildMSI(t, msiSpec{Version: "2.9.8.0", Kernel: debianKernel(t), Modules: debianModulesVHD(t), ModulesName: ArtifactsVHD})
	st, err := Open(context.Background(), msi, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkStock(t, st, debianKernel(t), debianModulesVHD(t), ArtifactsVHD)
}

// Bad inputs: each gets a clear error and leaves the cache empty.
func TestOpenBadInputs(t *testing.T) {
	good := stockMSI(t)
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.msi")
	os.WriteFile(text, []byte("this is not an installer\n"), 0o644)
	empty := filepath.Join(dir, "empty.msi")
	testenv.Run(t, "msibuild", empty, "-s", "nothing") // a valid database without tables
	b, _ := os.ReadFile(good)
	trunc := func(n int) string {
		p := filepath.Join(dir, fmt.Sprintf("trunc-%d.msi", n))
		os.WriteFile(p, b[:n], 0o644)
		return p
	}
	noFiles := buildMSI(t, msiSpec{})
	kernelOnly := buildMSI(t, msiSpec{Kernel: debianKernel(t)})
	cases := []struct{ name, msi, want string }{
		{"text file", text, "is not an MSI (no compound file signature"},
		{"empty file", trunc(0), "is not an MSI"},
		{"first 7 bytes", trunc(7), "is not an MSI"},
		{"database without tables", empty, "is not a WSL installer: it has no File table"},
		{"no kernel", noFiles, `no WSL\tools\kernel in the File table (tools files: ProgramFiles64Folder\WSL\tools\init, ProgramFiles64Folder\WSL\tools\bsdtar)`},
		{"no modules image", kernelOnly, `no WSL\tools\modules.vhd or WSL\tools\artifacts.vhd`},
		{"truncated to 4 KiB", trunc(4096), "is not a readable Windows Installer database (truncated or damaged?)"},
		{"truncated to half", trunc(len(b) / 2), "is not a readable Windows Installer database (truncated or damaged?)"},
		{"truncated by 600 bytes", trunc(len(b) - 600), "is not a readable Windows Installer database (truncated or damaged?)"},
		{"../ file name", modifyMSI(t, good, `UPDATE File SET FileName='..\..\..\evil' WHERE File='kernel'`),
			`unsafe name in the File table, row kernel: FileName "..\\..\\..\\evil"`},
		{"/ in a file name", modifyMSI(t, good, `UPDATE File SET FileName='../../etc/cron.d/x' WHERE File='wsl.exe'`), "unsafe name in the File table, row wsl.exe"},
		{"absolute file name", modifyMSI(t, good, `UPDATE File SET FileName='C:\Windows\evil' WHERE File='init'`), "unsafe name in the File table, row init"},
		{".. directory", modifyMSI(t, good, `UPDATE Directory SET DefaultDir='..' WHERE Directory='TOOLSFOLDER'`),
			`unsafe name in the Directory table, row TOOLSFOLDER: DefaultDir ".."`},
		{"long name ..", modifyMSI(t, good, `UPDATE Directory SET DefaultDir='lib|..' WHERE Directory='LIBFOLDER'`), "row LIBFOLDER"},
		{"name with a line break", modifyMSI(t, good, "UPDATE File SET FileName='a\nb' WHERE File='bsdtar'"), "table File: row 4 holds a line break"},
		{"name with a tab", modifyMSI(t, good, "UPDATE File SET FileName='a\tb' WHERE File='bsdtar'"), "table File: row 4 has 9 fields for 8 columns"},
		{"truncated cabinet", truncatedCab(t, good), "cabinet stream cab1.cab (truncated or damaged?)"},
		{"damaged cabinet", damagedCab(t, good), "modules.vhd"},
		{"size mismatch", modifyMSI(t, good, `UPDATE File SET FileSize=5 WHERE File='kernel'`), "the File table says 5"},
		{"MD5 mismatch", modifyMSI(t, good, `UPDATE MsiFileHash SET HashPart1=1 WHERE File_='modules.vhd'`), "differs from the MSI's MsiFileHash"},
		{"external cabinet", modifyMSI(t, good, `UPDATE Media SET Cabinet='cab1.cab'`), `tools\kernel: in the external cabinet "cab1.cab"`},
		{"missing cabinet stream", modifyMSI(t, good, `UPDATE Media SET Cabinet='#cab2.cab'`), "reading the cabinet stream cab2.cab"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cache := t.TempDir()
			_, err := Open(context.Background(), c.msi, cache, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if got := entries(t, filepath.Join(cache, CacheSubdir)); len(got) != 0 {
				t.Errorf("cache holds %v after the error", got)
			}
			t.Logf("%v", err)
		})
	}
}

// A damaged cache entry is replaced; a missing tool is a clear error.
func TestOpenDamagedEntryAndTools(t *testing.T) {
	msi := stockMSI(t)
	cache := t.TempDir()
	st, err := Open(context.Background(), msi, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(st.Kernel, []byte("short"), 0o644)
	var log bytes.Buffer
	st2, err := Open(context.Background(), msi, cache, progress.New(&log))
	if err != nil || !strings.Contains(log.String(), "extracting again") {
		t.Fatalf("%v\n%s", err, log.String())
	}
	checkStock(t, st2, debianKernel(t), debianModulesVHD(t), ModulesVHD)
	t.Setenv("PATH", t.TempDir())
	if _, err := Open(context.Background(), msi, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "msiinfo not found on PATH (install msitools") {
		t.Errorf("without tools: %v", err)
	}
}

// The test kernel (a real built WSL-configured kernel) and a modules VHD
// made from its installed modules, as a release build would ship them.
func TestOpenBuiltKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("builds or loads the test kernel")
	}
	k := buildtest.TestKernel(t)
	vhd := filepath.Join(t.TempDir(), ModulesVHD)
	makeVHD(t, k.ModulesDir(), vhd)
	msi := buildMSI(t, msiSpec{Version: "2.7.9.0", Kernel: k.Image(), Modules: vhd})
	st, err := Open(context.Background(), msi, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkStock(t, st, k.Image(), vhd, ModulesVHD)
}

// replaceCab returns a copy of msi whose cab1.cab is changed by edit.
func replaceCab(t *testing.T, msi string, edit func([]byte) []byte) string {
	t.Helper()
	cab := testenv.Run(t, "msiinfo", "extract", msi, "cab1.cab")
	p := filepath.Join(t.TempDir(), "cab1.cab")
	os.WriteFile(p, edit([]byte(cab)), 0o644)
	out := modifyMSI(t, msi)
	testenv.Run(t, "msibuild", out, "-a", "cab1.cab", p)
	return out
}

// truncatedCab cuts the cabinet in half.
func truncatedCab(t *testing.T, msi string) string {
	return replaceCab(t, msi, func(b []byte) []byte { return b[:len(b)/2] })
}

// damagedCab flips bytes in the compressed data near the end (the
// modules image's part of the stream).
func damagedCab(t *testing.T, msi string) string {
	return replaceCab(t, msi, func(b []byte) []byte {
		for i := len(b) - 5000; i < len(b)-4000; i++ {
			b[i] ^= 0x55
		}
		return b
	})
}
