package compilelog

import (
	"reflect"
	"strings"
	"testing"
)

func TestCompileErrorsCap(t *testing.T) {
	log := strings.NewReader(`  CC [M]  /w/m/a.c
/w/m/a.c:3:5: error: x undeclared
/w/m/a.c:3:5: error: x undeclared
/w/m/sub/b.c:9: fatal error: y.h: No such file or directory
a.c:4:1: warning: not an error
/usr/src/k/include/linux/z.h:1:2: error: outside
c.c:7:3: error: relative
`)
	got := CompileErrors(log, "/w/m", "/src/m", 0)
	want := []CompileError{
		{File: "/src/m/a.c", Line: 3, Column: 5, Severity: "error", Message: "x undeclared"},
		{File: "/src/m/sub/b.c", Line: 9, Severity: "fatal error", Message: "y.h: No such file or directory"},
		{File: "/usr/src/k/include/linux/z.h", Line: 1, Column: 2, Severity: "error", Message: "outside"},
		{File: "/src/m/c.c", Line: 7, Column: 3, Severity: "error", Message: "relative"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got := CompileErrors(strings.NewReader("a.c:1:1: error: 1\na.c:2:1: error: 2\na.c:3:1: error: 3\n"), "", "", 2); len(got) != 2 {
		t.Errorf("cap 2: %d", len(got))
	}
}
