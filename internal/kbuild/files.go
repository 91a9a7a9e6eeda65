package kbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// DirSize returns the total size of the regular files under dir.
func DirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// CopyDevel is the fallback for kernels without
// scripts/package/install-extmod-build: it copies the same file set into
// devel — from the source tree the top Makefile, arch Makefiles, include
// directories, Kbuild.platforms/Platform files, include/ (without config
// and generated) and scripts/; from the object tree Module.symvers, the
// generated headers, include/config/{auto.conf,kernel.release}, the
// built scripts, objtool, resolve_btfids and GCC plugins — then deletes
// .*.cmd and *.o files.
func CopyDevel(src, obj, srcArch, devel string) error {
	auto, err := kconfig.ReadConfig(filepath.Join(obj, "include", "config", "auto.conf"))
	if err != nil {
		return err
	}
	var files []string // paths relative to root, with the root they come from
	add := func(root, rel string) { files = append(files, root+"\x00"+rel) }
	walk := func(root, top string, skip func(rel string, d fs.DirEntry) (skipDir, skipFile bool)) error {
		base := filepath.Join(root, top)
		if _, err := os.Lstat(base); err != nil {
			return nil
		}
		return filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			sd, sf := skip(rel, d)
			if d.IsDir() {
				if sd {
					return filepath.SkipDir
				}
				return nil
			}
			if !sf {
				add(root, rel)
			}
			return nil
		})
	}
	scripts := func(rel string, d fs.DirEntry) (bool, bool) {
		if d.IsDir() {
			switch d.Name() {
			case "atomic", "dtc", "kconfig", "package":
				return true, false
			}
			return false, false
		}
		return false, d.Name() == "unifdef" || d.Name() == "mk_elfconfig" || !(d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0)
	}
	none := func(string, fs.DirEntry) (bool, bool) { return false, false }
	add(src, "Makefile")
	archDir := "arch/" + srcArch
	ents, _ := os.ReadDir(filepath.Join(src, archDir))
	for _, e := range ents {
		if !e.IsDir() && strings.HasPrefix(e.Name(), "Makefile") {
			add(src, archDir+"/"+e.Name())
		}
	}
	if err := walk(src, archDir, func(rel string, d fs.DirEntry) (bool, bool) {
		if d.IsDir() {
			return d.Name() == "generated", false
		}
		inInclude := strings.Contains("/"+rel, "/include/")
		return false, !(inInclude || d.Name() == "Kbuild.platforms" || d.Name() == "Platform")
	}); err != nil {
		return err
	}
	if err := walk(src, "include", func(rel string, d fs.DirEntry) (bool, bool) {
		if d.IsDir() {
			return rel == "include/config" || rel == "include/generated", false
		}
		return false, false
	}); err != nil {
		return err
	}
	if err := walk(src, "scripts", scripts); err != nil {
		return err
	}
	for _, rel := range []string{"Module.symvers", "include/config/auto.conf", "include/config/kernel.release"} {
		add(obj, rel)
	}
	if auto.Get("CONFIG_OBJTOOL") == "y" {
		add(obj, "tools/objtool/objtool")
	}
	if auto.Get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y" {
		add(obj, "tools/bpf/resolve_btfids/resolve_btfids")
	}
	for _, top := range []string{archDir + "/include/generated", "include/generated"} {
		if err := walk(obj, top, none); err != nil {
			return err
		}
	}
	if err := walk(obj, "scripts", scripts); err != nil {
		return err
	}
	if auto.Get("CONFIG_GCC_PLUGINS") == "y" {
		if err := walk(obj, "scripts/gcc-plugins", func(rel string, d fs.DirEntry) (bool, bool) {
			return false, !strings.HasSuffix(rel, ".so")
		}); err != nil {
			return err
		}
	}
	sort.Strings(files)
	for _, f := range files {
		root, rel, _ := strings.Cut(f, "\x00")
		base := filepath.Base(rel)
		if strings.HasSuffix(base, ".o") || (strings.HasPrefix(base, ".") && strings.HasSuffix(base, ".cmd")) {
			continue
		}
		from, to := filepath.Join(root, rel), filepath.Join(devel, rel)
		st, err := os.Lstat(from)
		if err != nil {
			return err
		}
		os.Remove(to) // the object tree overrides the source tree
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(from)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, to); err != nil {
				return err
			}
			continue
		}
		if err := atomicfile.CopyFile(from, to, 0); err != nil {
			return err
		}
	}
	return nil
}

// longStep announces a step like Reporter.Step and, while it runs, prints
// a line with the elapsed time every interval, so CI logs show progress
// during builds that take many minutes.
func longStep(p *progress.Reporter, interval time.Duration, format string, a ...any) (done func()) {
	end := p.Step(format, a...)
	if p == nil {
		return end
	}
	name := fmt.Sprintf(format, a...)
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.Printf("... %s: still running (%s)", name, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(stop); end() }
}
