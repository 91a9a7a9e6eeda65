package kimage_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestEmbeddedConfig reads the config CONFIG_IKCONFIG embeds: in the x86
// test kernel (config-test sets it, as every WSL config does) it is the
// build's .config byte for byte, from the bzImage and from the plain
// vmlinux; Debian's vmlinuz and the arm64 test kernel have none.
func TestEmbeddedConfig(t *testing.T) {
	k := buildtest.TestKernel(t)
	want, err := os.ReadFile(k.Config())
	if err != nil {
		t.Fatal(err)
	}
	_, vmlinux, _ := testVmlinux(t)
	for name, p := range map[string]string{"bzImage": k.Image(), "vmlinux": writeTemp(t, "vmlinux", vmlinux)} {
		f, err := kimage.Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.Config()
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: config of %d bytes (%v), the build's has %d", name, len(got), err, len(want))
		}
	}
	root, rel := testenv.DebianModules(t)
	for name, p := range map[string]string{"Debian vmlinuz": filepath.Join(root, "boot", "vmlinuz-"+rel)} {
		f, err := kimage.Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Config(); !errors.Is(err, kimage.ErrNoConfig) {
			t.Errorf("%s: %v, want ErrNoConfig", name, err)
		}
		f.Close()
	}
	if testing.Short() {
		return
	}
	a := buildtest.TestKernelArm64(t)
	f, err := kimage.Open(a.Image(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Config(); !errors.Is(err, kimage.ErrNoConfig) {
		t.Errorf("arm64 Image: %v, want ErrNoConfig", err)
	}
}

// ikconfigBlob is what kernel/configs.c puts in .rodata: the markers
// around the gzip of cfg (after some bytes of other data).
func ikconfigBlob(cfg []byte, tail string) []byte {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(cfg)
	zw.Close()
	b := append([]byte("other rodata IKCFG_ST in a string\x00"), "IKCFG_ST"...)
	return append(append(b, gz.Bytes()...), tail...)
}

// rodataELF is a synthetic vmlinux whose .rodata is data.
func rodataELF(data []byte) []byte {
	return synthELF(data, []synthSection{{name: ".rodata", off: 0, size: len(data)}})
}

// TestConfigCrafted reads crafted embedded configs: the marker text in
// other data is passed over, and a truncated stream, a missing end marker
// and an oversized config are errors that are not ErrNoConfig.
func TestConfigCrafted(t *testing.T) {
	cfg := []byte("CONFIG_MODULES=y\nCONFIG_IKCONFIG=y\n")
	good := ikconfigBlob(cfg, "IKCFG_ED")
	open := func(img []byte) ([]byte, error) {
		f, err := kimage.NewFile(bytes.NewReader(img), int64(len(img)), nil)
		if err != nil {
			t.Fatalf("NewFile: %v", err)
		}
		return f.Config()
	}
	for name, img := range map[string][]byte{"vmlinux": rodataELF(good), "arm64 Image": tinyArm64(good)} {
		if got, err := open(img); err != nil || !bytes.Equal(got, cfg) {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	big := ikconfigBlob(bytes.Repeat([]byte("#"), 17<<20), "IKCFG_ED")
	for name, c := range map[string]struct {
		img  []byte
		want error
	}{
		"no marker":     {rodataELF([]byte("just data")), kimage.ErrNoConfig},
		"no .rodata":    {synthELF([]byte("IKCFG_ST"), []synthSection{{name: ".data", size: 8}}), kimage.ErrNoConfig},
		"truncated":     {rodataELF(good[:len(good)-20]), io.ErrUnexpectedEOF},
		"no end marker": {rodataELF(ikconfigBlob(cfg, "IKCFG_XX")), nil},
		"over 16 MiB":   {rodataELF(big), kimage.ErrTooLarge},
	} {
		_, err := open(c.img)
		switch {
		case err == nil:
			t.Errorf("%s: no error", name)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", name, err, c.want)
		case c.want != kimage.ErrNoConfig && errors.Is(err, kimage.ErrNoConfig):
			t.Errorf("%s: %v is ErrNoConfig", name, err)
		}
	}
}
