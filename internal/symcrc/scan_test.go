package symcrc

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// The export macros of the kernel headers the scan must see through, as
// they are written in 6.12 (shortened to what matters).
var testHeaders = map[string]string{
	"include/linux/tracepoint.h": `
#ifdef TRACEPOINTS_ENABLED
#define EXPORT_TRACEPOINT_SYMBOL_GPL(name)				\
	EXPORT_SYMBOL_GPL(__tracepoint_##name);				\
	EXPORT_SYMBOL_GPL(__traceiter_##name);				\
	EXPORT_STATIC_CALL_GPL(tp_func_##name)
#else
#define EXPORT_TRACEPOINT_SYMBOL_GPL(name)
#endif
`,
	"include/linux/static_call.h": `
#define EXPORT_STATIC_CALL_GPL(name)					\
	EXPORT_SYMBOL_GPL(STATIC_CALL_KEY(name));			\
	EXPORT_SYMBOL_GPL(STATIC_CALL_TRAMP(name))
#define EXPORT_STATIC_CALL_TRAMP_GPL(name)				\
	EXPORT_SYMBOL_GPL(STATIC_CALL_TRAMP(name));			\
	ARCH_ADD_TRAMP_KEY(name)
`,
	"include/linux/pgtable.h": `
#define DECLARE_VM_GET_PAGE_PROT					\
pgprot_t vm_get_page_prot(unsigned long vm_flags)			\
{									\
		return protection_map[vm_flags &			\
			(VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)];	\
}									\
EXPORT_SYMBOL(vm_get_page_prot);
`,
	"include/linux/export.h": `
#define EXPORT_SYMBOL(sym)		_EXPORT_SYMBOL(sym, "")
#define EXPORT_SYMBOL_GPL(sym)		_EXPORT_SYMBOL(sym, "GPL")
`,
}

func globalRules(t *testing.T) (rules, [][]byte) {
	t.Helper()
	g := rules{}
	for _, h := range testHeaders {
		for n, d := range scanHeader([]byte(h)).rules {
			g[n] = append(g[n], d...)
		}
	}
	if g["EXPORT_SYMBOL"] != nil {
		t.Fatal("EXPORT_SYMBOL itself must not become a rule")
	}
	var needles [][]byte
	for n := range g {
		if !exportLike(n) {
			needles = append(needles, []byte(n))
		}
	}
	return g, needles
}

func TestScanSource(t *testing.T) {
	g, needles := globalRules(t)
	src := `
// EXPORT_SYMBOL(in_a_comment): comments are not code.
/* a comment with a quote ' and "EXPORT_SYMBOL(" */
int plain(void) { return 0; }
EXPORT_SYMBOL(plain);
EXPORT_SYMBOL_NS_GPL(namespaced, FOO);
EXPORT_TRACEPOINT_SYMBOL_GPL(foo_event);
EXPORT_STATIC_CALL_TRAMP_GPL(apic_call_send_IPI);
EXPORT_PER_CPU_SYMBOL(per_cpu_thing);
static const char *s = "EXPORT_SYMBOL(in_a_string)";

#define DEFINE_BATCHED(type)						\
type get_random_ ##type(void)						\
{									\
	/*								\
	 * A comment inside the macro body keeps its line splices.	\
	 */								\
	return 0;							\
}									\
EXPORT_SYMBOL(get_random_ ##type);

DEFINE_BATCHED(u8)
DEFINE_BATCHED(u64)

#define define_level(func, level)					\
void func(const char *fmt, ...) { }					\
EXPORT_SYMBOL(func);
define_level(_dev_err, KERN_ERR);

#define UNUSED_HERE(size) EXPORT_SYMBOL(__asan_load##size)
DECLARE_VM_GET_PAGE_PROT
#include "other.c"
`
	fs := scanSource("drivers/x/a.c", []byte(src), g, needles)
	want := []string{
		"__SCK__tp_func_foo_event", "__SCT__apic_call_send_IPI", "__SCT__tp_func_foo_event",
		"__traceiter_foo_event", "__tracepoint_foo_event", "_dev_err",
		"get_random_u64", "get_random_u8", "namespaced", "per_cpu_thing", "plain", "vm_get_page_prot",
	}
	if !reflect.DeepEqual(fs.exports, want) {
		t.Errorf("exports\n got %q\nwant %q", fs.exports, want)
	}
	if !reflect.DeepEqual(fs.patterns, []string{`^get_random_[A-Za-z0-9_]+$`, `^__asan_load[A-Za-z0-9_]+$`}) {
		t.Errorf("patterns %q", fs.patterns)
	}
	if !reflect.DeepEqual(fs.includes, []string{"drivers/x/other.c"}) {
		t.Errorf("includes %q", fs.includes)
	}
}

func TestScanSourceNoExports(t *testing.T) {
	g, needles := globalRules(t)
	fs := scanSource("lib/b.c", []byte("#include \"../x/y.c\"\nint f(void) { return 1; }\n"), g, needles)
	if len(fs.exports) != 0 || !reflect.DeepEqual(fs.includes, []string{"x/y.c"}) {
		t.Errorf("%+v", fs)
	}
}

func TestEval(t *testing.T) {
	env := map[string]string{"name": "foo", "size": "4"}
	for in, want := range map[string]string{
		"__tracepoint_##name":   "__tracepoint_foo",
		"get_random_ ## name":   "get_random_foo",
		"STATIC_CALL_KEY(name)": "__SCK__foo",
		"__asan_load##size":     "__asan_load4",
		"plain":                 "plain",
	} {
		if got, ok := eval(in, env); !ok || got != want {
			t.Errorf("eval(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := eval("a + b", env); ok {
		t.Error("an expression is not a name")
	}
}

func testTree(t *testing.T) string {
	files := map[string]string{
		"Makefile":                      "# kernel\n",
		"kernel/a.c":                    "EXPORT_SYMBOL(a_sym);\nEXPORT_TRACEPOINT_SYMBOL_GPL(ev);\n",
		"kernel/sched/wait.c":           "EXPORT_SYMBOL(__wake_up);\n",
		"kernel/sched/build_utility.c":  "#include \"wait.c\"\n",
		"arch/x86/lib/memcpy_64.S":      "SYM_FUNC_START(memcpy)\nEXPORT_SYMBOL(memcpy)\n",
		"arch/arm64/lib/memcpy.S":       "EXPORT_SYMBOL(memcpy)\n",
		"lib/string.c":                  "#ifndef __HAVE_ARCH_MEMCPY\nEXPORT_SYMBOL(memcpy);\n#endif\n",
		"mm/kasan/generic.c":            "#define DEFINE_ASAN_LOAD_STORE(size) \\\n\tEXPORT_SYMBOL(__asan_load##size)\n",
		"tools/lib/x.c":                 "EXPORT_SYMBOL(in_tools);\n",
		"Documentation/x.c":             "EXPORT_SYMBOL(in_docs);\n",
		"drivers/x/notes.txt":           "EXPORT_SYMBOL(in_text);\n",
		".git/x.c":                      "EXPORT_SYMBOL(in_git);\n",
		"include/linux/tracepoint.h":    testHeaders["include/linux/tracepoint.h"],
		"include/linux/static_call.h":   testHeaders["include/linux/static_call.h"],
		"include/linux/export.h":        testHeaders["include/linux/export.h"],
		"include/linux/not_exported.h":  "#define X 1\n",
		"drivers/x/x.h":                 "#define DRV_EXPORT(n) EXPORT_SYMBOL_GPL(drv_##n)\n",
		"drivers/x/x.c":                 "DRV_EXPORT(probe);\n",
		"drivers/x/y.c":                 "#define LOCAL(n) EXPORT_SYMBOL(n)\n",
		"arch/x86/kernel/cpu/feature.c": "EXPORT_SYMBOL(a_sym);\n",
		"kernel/rcu/tree_plugin.h":      "void rcu_note_context_switch(bool p) { }\nEXPORT_SYMBOL_GPL(rcu_note_context_switch);\n",
		"kernel/rcu/tree.c":             "#include <linux/export.h>\n  #  include \"tree_plugin.h\" /* the plugin */\n",
	}
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, files)
	return dir
}

func TestIndexLocate(t *testing.T) {
	dir := testTree(t)
	ix, cached, err := OpenIndex(context.Background(), dir, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cached {
		t.Error("no cache dir, but cached")
	}
	for _, c := range []struct {
		sym, arch string
		want      []string
	}{
		{"a_sym", "x86", []string{"arch/x86/kernel/cpu/feature.c", "kernel/a.c"}},
		{"a_sym", "arm64", []string{"kernel/a.c"}},
		{"memcpy", "x86", []string{"arch/x86/lib/memcpy_64.S", "lib/string.c"}},
		{"memcpy", "arm64", []string{"arch/arm64/lib/memcpy.S", "lib/string.c"}},
		{"__wake_up", "x86", []string{"kernel/sched/build_utility.c", "kernel/sched/wait.c"}},
		{"__SCK__tp_func_ev", "x86", []string{"kernel/a.c"}},
		{"__asan_load8", "x86", []string{"mm/kasan/generic.c"}},
		{"drv_probe", "x86", []string{"drivers/x/x.c"}},
		{"rcu_note_context_switch", "arm64", []string{"kernel/rcu/tree.c"}},
		{"in_tools", "x86", nil},
		{"in_docs", "x86", nil},
		{"in_text", "x86", nil},
		{"in_git", "x86", nil},
		{"nowhere", "x86", nil},
	} {
		if got := ix.Locate(c.sym, c.arch); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Locate(%s, %s) = %q, want %q", c.sym, c.arch, got, c.want)
		}
	}
}

func TestIndexCache(t *testing.T) {
	dir := testTree(t)
	cache := t.TempDir()
	ctx := context.Background()
	open := func() (*Index, bool) {
		t.Helper()
		ix, cached, err := OpenIndex(ctx, dir, IndexOptions{CacheDir: cache, Jobs: 2})
		if err != nil {
			t.Fatal(err)
		}
		return ix, cached
	}
	ix1, cached := open()
	if cached {
		t.Fatal("first open is a cache hit")
	}
	ix2, cached := open()
	if !cached || ix2.Key != ix1.Key || !reflect.DeepEqual(ix2.Exports, ix1.Exports) {
		t.Fatalf("second open: cached %v, key %s vs %s", cached, ix2.Key, ix1.Key)
	}
	// A changed file changes the key: the tree is rescanned.
	p := filepath.Join(dir, "kernel", "a.c")
	if err := os.WriteFile(p, []byte("EXPORT_SYMBOL(b_sym);\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, future, future); err != nil {
		t.Fatal(err)
	}
	ix3, cached := open()
	if cached || ix3.Key == ix1.Key || ix3.Locate("b_sym", "x86") == nil || ix3.Locate("a_sym", "arm64") != nil {
		t.Fatalf("after a change: cached %v, key changed %v", cached, ix3.Key != ix1.Key)
	}
	// With a SourceID the key is the ID, whatever the tree holds.
	o := IndexOptions{CacheDir: cache, SourceID: "sha256:abc"}
	a, _, err := OpenIndex(ctx, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	b, cached, err := OpenIndex(ctx, filepath.Join(dir, "kernel", ".."), o)
	if err != nil || !cached || a.Key != b.Key {
		t.Fatalf("SourceID: cached %v, err %v", cached, err)
	}
	// A corrupt cache entry is rebuilt, not an error.
	if err := os.WriteFile(filepath.Join(cache, "index-"+a.Key+".json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, cached, err := OpenIndex(ctx, dir, o); err != nil || cached {
		t.Fatalf("corrupt cache: cached %v, err %v", cached, err)
	}
}

func TestOpenIndexNotATree(t *testing.T) {
	_, _, err := OpenIndex(context.Background(), t.TempDir(), IndexOptions{})
	if err == nil || !strings.Contains(err.Error(), "not a kernel source tree") {
		t.Fatalf("err %v", err)
	}
}
