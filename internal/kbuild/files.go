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
	var fl develFiles
	archDir := "arch/" + srcArch
	if err := fl.addSource(src, archDir); err != nil {
		return err
	}
	if err := fl.addObject(obj, archDir, auto); err != nil {
		return err
	}
	// By path, stable: for a path in both trees the source copy comes
	// first and the object tree's overrides it, whatever the roots' names.
	rel := func(f string) string { _, r, _ := strings.Cut(f, "\x00"); return r }
	sort.SliceStable(fl.files, func(i, j int) bool { return rel(fl.files[i]) < rel(fl.files[j]) })
	for _, f := range fl.files {
		root, rel, _ := strings.Cut(f, "\x00")
		base := filepath.Base(rel)
		if strings.HasSuffix(base, ".o") || (strings.HasPrefix(base, ".") && strings.HasSuffix(base, ".cmd")) {
			continue
		}
		if err := copyDevelFile(filepath.Join(root, rel), filepath.Join(devel, rel)); err != nil {
			return err
		}
	}
	return nil
}

// develFiles collects the files CopyDevel copies.
type develFiles struct {
	files []string // paths relative to root, with the root they come from
}

// develSkip says whether a walk skips a directory or a file; rel is
// relative to the walk's root, with slashes.
type develSkip func(rel string, d fs.DirEntry) (skipDir, skipFile bool)

// add adds rel, relative to root.
func (fl *develFiles) add(root, rel string) { fl.files = append(fl.files, root+"\x00"+rel) }

// walk adds the files under root/top that skip does not skip; a missing
// top adds nothing.
func (fl *develFiles) walk(root, top string, skip develSkip) error {
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
			fl.add(root, rel)
		}
		return nil
	})
}

// addSource adds the source tree's files: the top Makefile, the arch
// Makefiles, include directories and Kbuild.platforms/Platform files,
// include/ (without config and generated) and scripts/.
func (fl *develFiles) addSource(src, archDir string) error {
	fl.add(src, "Makefile")
	ents, _ := os.ReadDir(filepath.Join(src, archDir))
	for _, e := range ents {
		if !e.IsDir() && strings.HasPrefix(e.Name(), "Makefile") {
			fl.add(src, archDir+"/"+e.Name())
		}
	}
	if err := fl.walk(src, archDir, skipSourceArch); err != nil {
		return err
	}
	if err := fl.walk(src, "include", skipSourceInclude); err != nil {
		return err
	}
	return fl.walk(src, "scripts", skipScripts)
}

// addObject adds the object tree's files: Module.symvers,
// include/config/{auto.conf,kernel.release}, objtool and resolve_btfids
// if auto enables them, the generated headers, the built scripts and the
// GCC plugins if auto enables them.
func (fl *develFiles) addObject(obj, archDir string, auto kconfig.Config) error {
	for _, rel := range []string{"Module.symvers", "include/config/auto.conf", "include/config/kernel.release"} {
		fl.add(obj, rel)
	}
	if auto.Get("CONFIG_OBJTOOL") == "y" {
		fl.add(obj, "tools/objtool/objtool")
	}
	if auto.Get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y" {
		fl.add(obj, "tools/bpf/resolve_btfids/resolve_btfids")
	}
	none := func(string, fs.DirEntry) (bool, bool) { return false, false }
	for _, top := range []string{archDir + "/include/generated", "include/generated"} {
		if err := fl.walk(obj, top, none); err != nil {
			return err
		}
	}
	if err := fl.walk(obj, "scripts", skipScripts); err != nil {
		return err
	}
	if auto.Get("CONFIG_GCC_PLUGINS") == "y" {
		return fl.walk(obj, "scripts/gcc-plugins", func(rel string, d fs.DirEntry) (bool, bool) {
			return false, !strings.HasSuffix(rel, ".so")
		})
	}
	return nil
}

// skipSourceArch keeps, under the source tree's arch directory, the
// include directories (without generated) and the Kbuild.platforms and
// Platform files.
func skipSourceArch(rel string, d fs.DirEntry) (bool, bool) {
	if d.IsDir() {
		return d.Name() == "generated", false
	}
	inInclude := strings.Contains("/"+rel, "/include/")
	return false, !(inInclude || d.Name() == "Kbuild.platforms" || d.Name() == "Platform")
}

// skipSourceInclude keeps the source tree's include/ without
// include/config and include/generated.
func skipSourceInclude(rel string, d fs.DirEntry) (bool, bool) {
	if d.IsDir() {
		return rel == "include/config" || rel == "include/generated", false
	}
	return false, false
}

// skipScripts keeps scripts/ without the directories and programs that
// external module builds do not use, and without special files.
func skipScripts(rel string, d fs.DirEntry) (bool, bool) {
	if d.IsDir() {
		switch d.Name() {
		case "atomic", "dtc", "kconfig", "package":
			return true, false
		}
		return false, false
	}
	return false, d.Name() == "unifdef" || d.Name() == "mk_elfconfig" || !(d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0)
}

// copyDevelFile copies the file or symlink from to to, replacing what is
// there (the object tree overrides the source tree).
func copyDevelFile(from, to string) error {
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
		return os.Symlink(t, to)
	}
	return atomicfile.CopyFile(from, to, 0)
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
