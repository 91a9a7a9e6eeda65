package symcrc

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	results := map[string]*fileResult{
		"fs/inode.c":                   {kind: "vmlinux", crcs: map[string]uint32{"iput": 0x1111, "ihold": 0x2222}},
		"lib/string.c":                 {kind: "vmlinux", crcs: map[string]uint32{"strlen": 0x3333}},
		"arch/x86/lib/memcpy_64.S":     {kind: "vmlinux", crcs: map[string]uint32{"memcpy": 0x4444}, asmExports: map[string]bool{"memcpy": true, "__memcpy": true}},
		"arch/x86/lib/noproto.S":       {kind: "vmlinux", crcs: map[string]uint32{}, asmExports: map[string]bool{"noproto": true}},
		"kernel/sched/wait.c":          {kind: "none", crcs: map[string]uint32{"__wake_up": 0x5555}},
		"kernel/sched/build_utility.c": {kind: "vmlinux", crcs: map[string]uint32{"__wake_up": 0x6666}},
		"kernel/softirq.c":             {kind: "vmlinux", crcs: map[string]uint32{}},
		"drivers/broken.c":             {kind: "", err: errors.New("cpp: fatal error")},
		"drivers/ok.c":                 {kind: "vmlinux", crcs: map[string]uint32{"shared": 0x7777}},
		"drivers/none.c":               {kind: "none", crcs: map[string]uint32{"shaky": 0x8888}},
	}
	want := map[string]uint32{
		"iput": 0x1111, "ihold": 0x9999, "strlen": 0x3333, "memcpy": 0x4444, "noproto": 0,
		"__wake_up": 0x6666, "irq_stat": 0xabcd, "shared": 0x7777, "shaky": 0x1234, "lost": 0x42,
	}
	cands := map[string][]string{
		"iput": {"fs/inode.c"}, "ihold": {"fs/inode.c"}, "strlen": {"lib/string.c"},
		"memcpy":    {"arch/x86/lib/memcpy_64.S", "lib/string.c"},
		"noproto":   {"arch/x86/lib/noproto.S"},
		"__wake_up": {"kernel/sched/build_utility.c", "kernel/sched/wait.c"},
		"irq_stat":  {"kernel/softirq.c"},
		"shared":    {"drivers/broken.c", "drivers/ok.c"},
		"shaky":     {"drivers/broken.c", "drivers/none.c"},
		"lost":      {"drivers/broken.c"},
	}
	var r Report
	var notes []string
	r.decide(want, cands, results, func(f string, a ...any) { notes = append(notes, f) })
	var checked []string
	for _, c := range r.Checked {
		checked = append(checked, c.Symbol+"@"+c.File)
	}
	wantChecked := []string{
		"__wake_up@kernel/sched/build_utility.c", "iput@fs/inode.c", "memcpy@arch/x86/lib/memcpy_64.S",
		"noproto@arch/x86/lib/noproto.S", "shared@drivers/ok.c", "strlen@lib/string.c",
	}
	if !reflect.DeepEqual(checked, wantChecked) {
		t.Errorf("checked %q\nwant    %q", checked, wantChecked)
	}
	wantMis := []Mismatch{
		{Symbol: "ihold", File: "fs/inode.c", Stock: 0x9999, Source: 0x2222},
		{Symbol: "irq_stat", File: "kernel/softirq.c", Stock: 0xabcd, Kind: NotExported, Candidates: []string{"kernel/softirq.c"}},
	}
	if !reflect.DeepEqual(r.Mismatches, wantMis) {
		t.Errorf("mismatches %+v\nwant       %+v", r.Mismatches, wantMis)
	}
	// "shaky": the only answer is from a file no Makefile builds, and a
	// broken candidate might be the real one: not decidable.
	if len(r.Failed) != 1 || r.Failed[0].File != "drivers/broken.c" || !reflect.DeepEqual(r.Failed[0].Symbols, []string{"lost", "shaky"}) {
		t.Errorf("failed %+v", r.Failed)
	}
	err := r.Err()
	if err == nil {
		t.Fatal("Err() = nil with mismatches")
	}
	for _, s := range []string{"ihold: stock CRC 0x00009999, source CRC 0x00002222 (fs/inode.c)",
		"irq_stat: stock CRC 0x0000abcd, but kernel/softirq.c does not export it with this config",
		"drivers/broken.c (for lost, shaky): cpp: fatal error", "2 of 10 symbols"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
}

func TestReportErrNil(t *testing.T) {
	r := Report{Checked: []Checked{{Symbol: "a"}}, Unlocated: []string{"b"}}
	if err := r.Err(); err != nil {
		t.Fatalf("unlocated symbols are warnings, not errors: %v", err)
	}
}

func TestMismatchUnversioned(t *testing.T) {
	m := Mismatch{Symbol: "x", File: "a.S", Stock: 1}
	if !strings.Contains(m.String(), "none (exported without a version)") {
		t.Error(m.String())
	}
}

func TestParseSymvers(t *testing.T) {
	m, err := parseSymvers([]byte("#SYMVER iput 0x1a2b3c4d\n#SYMVER ihold 0x00000001\n\n"))
	if err != nil || !reflect.DeepEqual(m, map[string]uint32{"iput": 0x1a2b3c4d, "ihold": 1}) {
		t.Fatalf("%v %v", m, err)
	}
	for _, bad := range []string{"garbage\n", "#SYMVER a\n", "#SYMVER a 0xfffffffff\n", "#SYMVER a zz\n"} {
		if _, err := parseSymvers([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestReadNM(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.nm")
	nm := "0000000000000000 r __export_symbol___memcpy\n0000000000000010 r __export_symbol_memcpy\n0000000000000000 T memcpy\n"
	if err := os.WriteFile(p, []byte(nm), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readNM(p)
	if err != nil || !reflect.DeepEqual(got, map[string]bool{"__memcpy": true, "memcpy": true}) {
		t.Fatalf("%v %v", got, err)
	}
}

func TestPlanJobs(t *testing.T) {
	byDir, bad := planJobs([]string{"arch/x86/lib/a.S", "arch/x86/lib/a.c", "fs/inode.c", "top.c", "fs/we ird.c"})
	if !reflect.DeepEqual(bad, []string{"fs/we ird.c", "top.c"}) {
		t.Errorf("bad %q", bad)
	}
	want := map[string][]job{
		"arch/x86/lib": {{rel: "arch/x86/lib/a.c", dir: "arch/x86/lib", target: "arch/x86/lib/a.symcrc"}},
		"fs":           {{rel: "fs/inode.c", dir: "fs", target: "fs/inode.symcrc"}},
	}
	if !reflect.DeepEqual(byDir, want) {
		t.Errorf("jobs %+v", byDir)
	}
}

func TestOptionsChecks(t *testing.T) {
	obj := t.TempDir()
	o := Options{Src: t.TempDir(), Obj: obj}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := o.inspect(); err == nil || !strings.Contains(err.Error(), "not a prepared kernel tree") {
		t.Errorf("no auto.conf: %v", err)
	}
	conf := filepath.Join(obj, "include", "config", "auto.conf")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("CONFIG_MODULES=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := o.inspect(); err == nil || !strings.Contains(err.Error(), "CONFIG_MODVERSIONS is not set") {
		t.Errorf("no MODVERSIONS: %v", err)
	}
	bad := Options{Src: "/src", MakeArgs: []string{"O=/elsewhere"}}
	if err := bad.normalize(); err == nil {
		t.Error("O= accepted")
	}
	if err := (&Options{}).normalize(); err == nil {
		t.Error("no Src accepted")
	}
	if err := (&Options{Src: "/src", Obj: "/src/"}).normalize(); err == nil || !strings.Contains(err.Error(), "in-tree") {
		t.Errorf("in-tree: %v", err)
	}
}

func TestMissingHeaders(t *testing.T) {
	byDir := map[string][]job{"lib": {{rel: "lib/crc32.c", dir: "lib", target: "lib/crc32.symcrc"},
		{rel: "lib/other.c", dir: "lib", target: "lib/other.symcrc"}}}
	results := map[string]*fileResult{
		"lib/crc32.c": {err: errors.New("failed"), stderr: "/src/lib/crc32.c:48:10: fatal error: crc32table.h: No such file or directory\n" +
			"   48 | #include \"crc32table.h\"\ncompilation terminated.\n"},
		"lib/other.c": {err: errors.New("failed"), stderr: "/src/lib/other.c:1:1: error: expected ';'\n"},
	}
	retry, headers := missingHeaders("/src", byDir, results)
	if !reflect.DeepEqual(headers, map[string][]string{"lib": {"lib/crc32table.h"}}) || len(retry["lib"]) != 1 || retry["lib"][0].rel != "lib/crc32.c" {
		t.Errorf("retry %+v, headers %v", retry, headers)
	}
	for stderr, want := range map[string]string{
		"<command-line>: fatal error: init/utsversion-tmp.h: No such file or directory\n": "init/utsversion-tmp.h",
		"/src/drivers/x/y.c:3:10: fatal error: gen/tbl.h: No such file or directory\n":    "drivers/x/gen/tbl.h",
		"/usr/include/x.h:3:10: fatal error: z.h: No such file or directory\n":            "",
		"<command-line>: fatal error: /abs/x.h: No such file or directory\n":              "",
		"/src/lib/a.c:1:1: error: expected ';'\n":                                         "",
	} {
		got, ok := missingTarget("/src", stderr)
		if ok != (want != "") || ok && got != want {
			t.Errorf("missingTarget(%q) = %q, %v; want %q", stderr, got, ok, want)
		}
	}
}

func TestTopMakefile(t *testing.T) {
	mk := topMakefile(map[string]*dirGoals{"fs": {c: []string{"fs/inode.symcrc"}}, "arch/x86/lib": {s: []string{"arch/x86/lib/memcpy_64.symcrc"}}},
		"/tmp/o", "/tmp/dir.mk", "/bin/bash")
	for _, want := range []string{
		"symcrc-run: symcrc-dir-0 symcrc-dir-1\n",
		"$(MAKE) $(build)=arch/x86/lib -f /tmp/dir.mk need-builtin=1 need-modorder=1 SYMCRC_OUT=/tmp/o SYMCRC_BASH=/bin/bash SYMCRC_C='' SYMCRC_S='arch/x86/lib/memcpy_64.symcrc' arch/x86/lib/memcpy_64.symcrc 2>/tmp/o/arch/x86/lib/.symcrc-dir.err",
		"$(build)=fs -f /tmp/dir.mk need-builtin=1 need-modorder=1 SYMCRC_OUT=/tmp/o SYMCRC_BASH=/bin/bash SYMCRC_C='fs/inode.symcrc' SYMCRC_S='' fs/inode.symcrc ",
	} {
		if !strings.Contains(mk, want) {
			t.Errorf("top makefile lacks %q:\n%s", want, mk)
		}
	}
}
