package kmodule

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// fuzzSeedModules lists real modules for seeds: a few of Debian's 6.1
// tree and of the cached 6.12 test kernels (x86_64 and arm64), if present.
func fuzzSeedModules() []string {
	var out []string
	deb := filepath.Join(testenv.CacheDir(), "debian-image", "lib", "modules", "*", "kernel")
	built := filepath.Join(testenv.CacheDir(), "kernel-cache", "kernel", "*", "modules", "lib", "modules", "*", "kernel")
	// Small ones: the fuzzer minimises every new input, which is slow for
	// big inputs.
	for _, pat := range []string{
		filepath.Join(deb, "crypto", "crct10dif_common.ko"),                                       // __ksymtab
		filepath.Join(deb, "fs", "smb", "common", "cifs_arc4.ko"),                                 // __ksymtab_gpl
		filepath.Join(deb, "drivers", "iio", "common", "inv_sensors", "inv_sensors_timestamp.ko"), // a namespace
		filepath.Join(built, "drivers", "i2c", "i2c-mux.ko*"),                                     // 6.12, x86_64
		filepath.Join(built, "fs", "nls", "nls_base.ko*"),                                         // 6.12, x86_64 and arm64
	} {
		m, _ := filepath.Glob(pat)
		out = append(out, m...)
	}
	return out
}

// FuzzParse parses arbitrary bytes as a (possibly compressed) module: no
// panic, decompression within MaxModuleSize, every export table entry
// named.
func FuzzParse(f *testing.F) {
	zw, _ := zstd.NewWriter(nil)
	for _, p := range fuzzSeedModules() {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f.Add(b)
		var gz bytes.Buffer
		w := gzip.NewWriter(&gz)
		w.Write(b)
		w.Close()
		f.Add(gz.Bytes())
		f.Add(zw.EncodeAll(b, nil))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("fuzz.ko", data)
		if err != nil {
			return
		}
		for _, s := range m.Ksymtab {
			if s.Name == "" {
				t.Fatalf("export table entry without a name")
			}
		}
	})
}
