package testenv

import (
	"io"
	"os/exec"
	"strings"
	"testing"
)

// Run runs the external program name (located with Tool) with args and
// returns its combined stdout and stderr; if the program fails, the test
// fails with that output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return RunCmd(t, exec.Command(Tool(t, name), args...))
}

// RunCmd runs cmd (for a program run with its own environment or
// directory) and returns its combined stdout and stderr; if it fails, the
// test fails with that output.
func RunCmd(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

// Debugfs runs one debugfs request (-R req) on the ext2/3/4 image img and
// returns its standard output.
func Debugfs(t testing.TB, img, req string) string {
	t.Helper()
	out, err := exec.Command(Tool(t, "debugfs"), "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(out)
}

// LogWriter returns an io.Writer into t's log: each Write is logged as
// one entry, without its trailing newlines.
func LogWriter(t testing.TB) io.Writer { return logWriter{t} }

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
