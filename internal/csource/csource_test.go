package csource

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

func TestStripComments(t *testing.T) {
	for in, want := range map[string]string{
		// A block comment keeps its newline and splicing backslash.
		"a /* x \\\n y */ b // c\nd '\"' \"/* not */\" e": "a      \\\n      b     \nd '\"' \"/* not */\" e",
		// A // comment goes on over a splice.
		"x // one \\\ntwo\ny": "x        \\\n   \ny",
		// An unclosed block comment runs to the end.
		"p /* open\nq": "p        \n ",
		// An apostrophe in assembly ends at its line.
		"mov r0, 'a\n/* c */ z":   "mov r0, 'a\n        z",
		"#define X 1 /* one */\n": "#define X 1          \n",
	} {
		if got := string(StripComments([]byte(in))); got != want {
			t.Errorf("StripComments(%q)\n got  %q\n want %q", in, got, want)
		}
	}
}

func TestReadFiles(t *testing.T) {
	root := t.TempDir()
	var rels []string
	for _, r := range []string{"a.c", "d/b.h", "d/e/c.S"} {
		p := filepath.Join(root, filepath.FromSlash(r))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("content of "+r), 0o644); err != nil {
			t.Fatal(err)
		}
		rels = append(rels, r)
	}
	var mu sync.Mutex
	var seen []string
	err := ReadFiles(context.Background(), root, rels, 2, func(rel string, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		if string(data) != "content of "+rel {
			t.Errorf("%s: %q", rel, data)
		}
		seen = append(seen, rel)
	})
	sort.Strings(seen)
	if err != nil || len(seen) != 3 || seen[0] != "a.c" || seen[2] != "d/e/c.S" {
		t.Fatalf("seen %v, %v", seen, err)
	}
	err = ReadFiles(context.Background(), root, []string{"a.c", "missing.c"}, 0, func(string, []byte) {})
	var pe *fs.PathError
	if !errors.As(err, &pe) || filepath.Base(pe.Path) != "missing.c" {
		t.Errorf("missing file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ReadFiles(ctx, root, rels, 1, func(string, []byte) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// FuzzStripComments: any input keeps its length and every newline, and
// blanking is idempotent.
func FuzzStripComments(f *testing.F) {
	for _, s := range []string{"a /* b */ c", "// x\\\ny", "\"/*\" '*/'", "/* open", "#define A(x) /* c */ x\n"} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("csource.go"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		out := StripComments(src)
		if len(out) != len(src) {
			t.Fatalf("length %d, want %d", len(out), len(src))
		}
		for i := range src {
			if src[i] == '\n' && out[i] != '\n' {
				t.Fatalf("newline at %d lost", i)
			}
		}
		if again := StripComments(out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q", out, again)
		}
	})
}

// TestIdents: whole identifiers with the prefix, at boundaries only, and
// the early stop.
func TestIdents(t *testing.T) {
	b := []byte("CONFIG_A XCONFIG_B CONFIG_C1_x(CONFIG_) CONFIG_D")
	var got []string
	Idents(b, "CONFIG_", func(i, j int) bool {
		got = append(got, string(b[i:j]))
		return len(got) < 3
	})
	if w := "CONFIG_A CONFIG_C1_x CONFIG_"; strings.Join(got, " ") != w {
		t.Errorf("got %q, want %q", got, w)
	}
}
