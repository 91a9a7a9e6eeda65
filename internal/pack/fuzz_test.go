package pack

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv/memlimit"
)

const fuzzMaxAlloc = 1 << 30 // allocations allowed per input

var (
	fuzzLimitOnce sync.Once
	zstdMagic     = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// FuzzRead reads arbitrary tar bytes, zstd-compressed here, as a pack.
// The seeds are a real pack of Debian modules, decompressed, so the
// fuzzer mutates the archive and pack.json rather than the zstd frame.
// Read must not panic, must keep memory bounded, and what it accepts must
// hold: every listed module present with its sha256, under the pack's
// directory, parsed, and no other file.
func FuzzRead(f *testing.F) {
	root, rel := testenv.DebianModules(f)
	// Small modules: the fuzzer is slow on big inputs.
	dir := filepath.Join(root, "lib", "modules", rel, "kernel", "lib")
	out := filepath.Join(f.TempDir(), "crc"+Ext)
	mods := map[string]string{"crc7.ko": filepath.Join(dir, "crc7.ko"), "sub/crc16.ko": filepath.Join(dir, "crc16.ko")}
	if _, err := Create(out, CreateOptions{Name: "crc", KernelRelease: rel, Modules: mods}); err != nil {
		f.Fatal(err)
	}
	f.Add(decompressFile(f, out))
	if b, err := os.ReadFile(out); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzLimitOnce.Do(func() { memlimit.LimitProcess(2 << 30) })
		before := memlimit.TotalAlloc()
		var pk *Pack
		var err error
		if bytes.HasPrefix(data, zstdMagic) {
			pk, err = Read(bytes.NewReader(data), "fuzz.pack")
		} else {
			pk, err = readTar(bytes.NewReader(data), "fuzz.pack")
		}
		if got := memlimit.TotalAlloc() - before; got > fuzzMaxAlloc {
			t.Fatalf("one input allocated %d MiB", got>>20)
		}
		if err != nil {
			return
		}
		checkAccepted(t, pk)
	})
}

// checkAccepted checks the invariants of a pack Read accepted.
func checkAccepted(t *testing.T, pk *Pack) {
	if len(pk.Files) != len(pk.Meta.Modules) || len(pk.Parsed) != len(pk.Meta.Modules) {
		t.Fatalf("%d files, %d parsed for %d listed modules", len(pk.Files), len(pk.Parsed), len(pk.Meta.Modules))
	}
	for _, md := range pk.Meta.Modules {
		data, ok := pk.Files[md.File]
		if !ok || pk.Parsed[md.File] == nil {
			t.Fatalf("%s listed but not read", md.File)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != md.SHA256 {
			t.Fatalf("%s accepted with the wrong sha256", md.File)
		}
		if path.Clean(md.File) != md.File || !strings.HasPrefix(md.File, pk.Meta.Name+"/") || strings.Contains(md.File, "..") {
			t.Fatalf("accepted module path %q", md.File)
		}
	}
}

// decompressFile returns the zstd-decompressed content of the file p.
func decompressFile(f testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		f.Fatal(err)
	}
	defer zr.Close()
	out, err := io.ReadAll(zr)
	if err != nil {
		f.Fatal(err)
	}
	return out
}
