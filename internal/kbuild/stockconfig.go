package kbuild

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/kimage"
)

// stockConfig is the config Microsoft's kernel embeds (CONFIG_IKCONFIG,
// set in the WSL configs of 6.6): the exact option set the stock kernel
// was built with, better than any copy of it.
type stockConfig struct {
	img   *kimage.File // the stock kernel, open (closed by cleanup)
	data  []byte       // nil when the kernel embeds none
	file  string       // a temporary copy, when it stands in for ConfigFile
	input bool         // the config was prepared from it (useAsDefault)
}

// EmbeddedConfig returns the config the kernel image at path embeds
// (CONFIG_IKCONFIG), or nil when it has none.
func EmbeddedConfig(path string) ([]byte, error) {
	f, err := kimage.Open(path, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel: stock kernel: %w", err)
	}
	defer f.Close()
	return configOf(f)
}

// configOf returns the config f embeds, nil when it has none.
func configOf(f *kimage.File) ([]byte, error) {
	data, err := f.Config()
	if errors.Is(err, kimage.ErrNoConfig) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kernel: stock kernel: %w", err)
	}
	return data, nil
}

// readStockConfig opens the kernel image at path (kept open for its
// exports: decompressing it is the costly part) and reads its embedded
// config; none is not an error, and neither is an unreadable one when a
// config was given (it only serves the comparison then: a warning says
// so). An image that does not open is.
func readStockConfig(path string, o StockOptions) (*stockConfig, error) {
	f, err := kimage.Open(path, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel: stock kernel: %w", err)
	}
	data, err := configOf(f)
	if err != nil && o.ConfigFile != "" {
		o.Progress.Printf("kernel: warning: %v; the prepared config is not compared with it", err)
		return &stockConfig{img: f}, nil
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &stockConfig{img: f, data: data}, nil
}

// useAsDefault makes the embedded config the one to prepare with when no
// config was given: it is written to a temporary file, named in
// o.ConfigFile (remove it with cleanup). It reports whether it did.
func (sc *stockConfig) useAsDefault(o *StockOptions) (bool, error) {
	if o.ConfigFile != "" || sc.data == nil {
		return false, nil
	}
	f, err := os.CreateTemp("", "wsl-modules-stock-config-")
	if err != nil {
		return false, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(sc.data); err != nil {
		os.Remove(f.Name())
		return false, fmt.Errorf("kernel: %w", err)
	}
	sc.file, o.ConfigFile, sc.input = f.Name(), f.Name(), true
	o.configName = "the config " + filepath.Base(o.Kernel) + " embeds"
	return true, nil
}

func (sc *stockConfig) cleanup() {
	if sc.file != "" {
		os.Remove(sc.file)
	}
	sc.img.Close()
}

// toolchainOption matches the options olddefconfig derives from the
// compiler, assembler, linker and other host tools rather than from the
// config's choices: they differ between build machines without changing
// what the config asks for.
var toolchainOption = regexp.MustCompile(`^CONFIG_(CC_IS_|CC_HAS_|CC_CAN_|CC_VERSION_TEXT$|GCC_VERSION$|GCC_ASM_|CLANG_VERSION$|AS_IS_|AS_HAS_|AS_VERSION$|AS_WRUSS$|LD_IS_|LD_CAN_|LD_VERSION$|LLD_VERSION$|RUSTC_|RUST_IS_|BINDGEN_|PAHOLE_|TOOLS_SUPPORT_|TOOLCHAIN_|PLUGIN_HOSTCC$|HAVE_.*_COMPILER$)`)

// differences lists the options in which the config prepared (after
// olddefconfig) differs from the stock kernel's own, leaving out the
// toolchain-derived ones; nil when the kernel embeds no config, or when
// the config was prepared from it (olddefconfig's changes are reported
// as such already).
func (sc *stockConfig) differences(prepared kconfig.Config) ([]kconfig.ConfigChange, error) {
	if sc.data == nil || sc.input {
		return nil, nil
	}
	stock, err := kconfig.ParseConfig(bytes.NewReader(sc.data))
	if err != nil {
		return nil, fmt.Errorf("kernel: the stock kernel's embedded config: %w", err)
	}
	var out []kconfig.ConfigChange
	for _, ch := range kconfig.DiffConfig(stock, prepared) {
		if !toolchainOption.MatchString(ch.Name) {
			out = append(out, ch)
		}
	}
	return out, nil
}
