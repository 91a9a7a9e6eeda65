package progress

import (
	"strings"
	"testing"
	"time"
)

// A real slice of a kernel build log: the steps are counted, the rest
// (warnings, make's directory lines) is not, and a line split across
// writes counts once.
func TestUnitsCountsKbuildSteps(t *testing.T) {
	log := "make[1]: Entering directory '/obj'\n" +
		"  SYNC    include/config/auto.conf\n" +
		"  HOSTCC  scripts/basic/fixdep\n" +
		"  CC      kernel/fork.o\n" +
		"kernel/fork.c:12:3: warning: unused variable 'x'\n" +
		"  CC [M]  fs/fat/inode.o\n" +
		"  LD [M]  fs/fat/fat.ko\n" +
		"  AR      lib/lib.a\n" +
		"   3 | int x;\n" +
		"  BTF [M] fs/fat/fat.ko\n"
	var out strings.Builder
	clock := time.Unix(1000, 0)
	r := &Reporter{W: &out, Now: func() time.Time { return clock }}
	u := r.Units("kernel make", 14, "the previous build of this config", time.Minute)
	w := u.Writer()
	half := len(log) / 2
	w.Write([]byte(log[:half]))
	clock = clock.Add(61 * time.Second)
	w.Write([]byte(log[half:]))
	if got := u.Count(); got != 7 {
		t.Errorf("counted %d steps, want 7", got)
	}
	if !strings.Contains(out.String(), "of 14 steps") || !strings.Contains(out.String(), "total from the previous build of this config") || !strings.Contains(out.String(), "ETA") {
		t.Errorf("report: %q", out.String())
	}
	u.Done()
	if !strings.Contains(out.String(), "kernel make: 7 steps in 1m1s (0.1/s; 14 expected from the previous build of this config)") {
		t.Errorf("final report: %q", out.String())
	}
	// An unknown total says so.
	out.Reset()
	u = r.Units("m", 0, "", time.Second)
	clock = clock.Add(time.Hour)
	u.Writer().Write([]byte("  CC [M]  a.o\n"))
	if !strings.Contains(out.String(), "1 steps") || !strings.Contains(out.String(), "total unknown") {
		t.Errorf("unknown total: %q", out.String())
	}
}
