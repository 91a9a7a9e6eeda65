package release

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// redactCopy finds secrets wherever they fall: split across its own
// chunk boundary, across every read (one byte at a time), overlapping,
// at the start and at the end.
func TestRedactCopy(t *testing.T) {
	other := "s3cr3t-value"
	pad := strings.Repeat("x", redactChunk-len(token)/2) // a token across the first chunk boundary
	for name, in := range map[string]string{
		"chunk boundary": pad + token + "\n" + strings.Repeat("y", redactChunk-3) + other + "z",
		"start and end":  token + " middle " + other,
		"overlap":        "ab" + token + token[:5] + token + "cd",
		"nothing":        "no secrets here\n",
		"prefix only":    token[:len(token)-1] + "\n",
	} {
		want := strings.ReplaceAll(strings.ReplaceAll(in, token, "***"), other, "***")
		for rname, rd := range map[string]io.Reader{"whole": strings.NewReader(in), "bytewise": iotest.OneByteReader(strings.NewReader(in))} {
			var out bytes.Buffer
			n, err := redactCopy(&out, rd, []string{token, "", other})
			if err != nil || out.String() != want || n != int64(out.Len()) {
				t.Errorf("%s, %s: %d bytes, err %v; equal %v", name, rname, n, err, out.String() == want)
			}
		}
	}
	// Of secrets starting at the same byte, the longest wins.
	var out bytes.Buffer
	redactCopy(&out, strings.NewReader("a-token-x"), []string{"token", "token-x"})
	if out.String() != "a-***" {
		t.Errorf("longest first: %q", out.String())
	}
}

// build-logs.tar.gz holds the logs with the token and other secrets
// replaced, also where they straddle the writer's chunk boundaries.
func TestLogsRedacted(t *testing.T) {
	logs := filepath.Join(t.TempDir(), "logs")
	os.MkdirAll(filepath.Join(logs, "modules"), 0o755)
	// Third-party output with the token across the first 32 KiB boundary
	// the writer reads at, the other secret across the third one, and the
	// token again at the very end.
	third := strings.Repeat("make[1]: compiling\n", 6000)
	auth := "Authorization: Bearer "
	leak := third[:redactChunk-len(auth)-len(token)/2] + auth + token + "\n"
	leak += third[:3*redactChunk-len(leak)-len("password=")-3] + "password=hunter2-secret\n" + token
	if i := strings.Index(leak, token); i >= redactChunk || i+len(token) <= redactChunk {
		t.Fatalf("the token does not straddle the chunk boundary (at %d)", i)
	}
	if i := strings.Index(leak, "hunter2-secret"); i >= 3*redactChunk || i+14 <= 3*redactChunk {
		t.Fatalf("the other secret does not straddle the chunk boundary (at %d)", i)
	}
	os.WriteFile(filepath.Join(logs, "modules", "leaky.log"), []byte(leak), 0o644)
	os.WriteFile(filepath.Join(logs, "kernel.log"), []byte("clean\n"), 0o644)
	dir := smallDist(t, distSpec{prepare: func(o *PrepareOptions) {
		o.LogsDir, o.Secrets = logs, []string{token, "hunter2-secret"}
	}})
	x := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", filepath.Join(dir, LogsFile), "-C", x).CombinedOutput(); err != nil {
		t.Fatalf("tar -xzf: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(x, "logs", "modules", "leaky.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(strings.ReplaceAll(leak, token, "***"), "hunter2-secret", "***")
	if string(got) != want {
		t.Errorf("redacted log differs (%d bytes, want %d); token left: %v", len(got), len(want), strings.Contains(string(got), token))
	}
	if b, _ := os.ReadFile(filepath.Join(x, "logs", "kernel.log")); string(b) != "clean\n" {
		t.Errorf("kernel.log: %q", b)
	}
}
