package modlist

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to Parse. Seeds: the repository's module
// lists (testdata/*.yml, examples/*.yml) and this package's test lists.
// Invariants: no panic (Parse recovers from one in the YAML library, and
// that is reported here as a failure too), every error is positioned in
// the named file, at most two seconds and a bounded amount of memory per
// input, and an accepted list is consistent (one source per module, make:
// arguments that expand within MaxExpanded, autoload names that resolve).
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"../../testdata/*.yml", "../../examples/*.yml"} {
		files, _ := filepath.Glob(pattern)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, s := range []string{good, autoloadList, "modules:\n  - name: a\n    path: a\n    make: [\"{{.Arch}}\"]\n",
		"x: &a [1]\nmodules: *a\n", "modules:\n  - &m {name: a, path: a}\n  - *m\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		l, err := Parse("f.yml", data)
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		if elapsed > 2*time.Second {
			t.Errorf("Parse took %v for %d bytes", elapsed, len(data))
		}
		// The YAML library allocates a few hundred bytes per input byte
		// and node; far more means something grows without bound.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20+uint64(len(data))*4096 {
			t.Errorf("Parse allocated %d bytes for %d bytes of input", alloc, len(data))
		}
		if err != nil {
			checkFuzzError(t, err)
			return
		}
		checkFuzzList(t, l)
	})
}

func checkFuzzError(t *testing.T, err error) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var me *Error
		if !errors.As(e, &me) {
			t.Errorf("error %T %q is not a *modlist.Error", e, e)
			continue
		}
		if me.File != "f.yml" || !strings.HasPrefix(me.Error(), "f.yml") {
			t.Errorf("error %q does not name the file", me)
		}
		if strings.HasPrefix(me.Msg, "cannot parse: ") {
			t.Errorf("the YAML library panicked: %s", me.Msg)
		}
	}
}

func checkFuzzList(t *testing.T, l *List) {
	built := map[string][]string{}
	for i := range l.Modules {
		m := &l.Modules[i]
		n := 0
		for _, s := range []string{m.Git, m.URL, m.Path} {
			if s != "" {
				n++
			}
		}
		if n != 1 || m.Name == "" {
			t.Errorf("accepted module %d: name %q, %d sources", i, m.Name, n)
		}
		args, err := m.MakeArgs(TemplateVars{KernelRelease: "6.6.87.2-microsoft-standard-WSL2", Arch: "x86_64", KernelDir: "/k"})
		if err != nil {
			t.Errorf("accepted module %s: MakeArgs: %v", m.Name, err)
		}
		for _, a := range args {
			if len(a) > MaxExpanded {
				t.Errorf("make argument of %d bytes", len(a))
			}
		}
		built[m.Name] = []string{m.Name + ".ko"}
	}
	names := l.AutoloadNames(built)
	for _, n := range names {
		if !modNameRE.MatchString(n) {
			t.Errorf("autoload name %q", n)
		}
	}
	if err := l.CheckAutoload(built, func(string) bool { return true }); err != nil {
		t.Errorf("CheckAutoload with an all-knowing resolver: %v", err)
	}
}
