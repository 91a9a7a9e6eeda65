package safeenv

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	helperEnv    = "WSLMOD_SAFEENV_HELPER"
	helperSecret = "ghs_PARENTsecret0123456789abcdefXYZ"
	nobody       = 65534
)

// TestProtectHelperProcess is not a test: run by TestChildCannotReadParentEnviron
// as the process that holds the token, it calls Protect (unless told not
// to), starts a child with Environ that reads /proc/$PPID/environ, and
// prints what the child got.
func TestProtectHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for TestChildCannotReadParentEnviron")
	}
	if mode == "protect" {
		if err := Protect(); err != nil {
			fmt.Println("protect:", err)
			os.Exit(2)
		}
		if d, err := Dumpable(); err != nil || d {
			fmt.Println("still dumpable:", d, err)
			os.Exit(2)
		}
	}
	child := exec.Command("/bin/sh", "-c", `cat /proc/$PPID/environ`)
	child.Env = Environ()
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	err := child.Run()
	fmt.Printf("child error: %v\n%s", err, out.Bytes())
	os.Exit(0)
}

// TestChildCannotReadParentEnviron runs the token holder as an ordinary
// user (nobody, when the test runs as root) and checks that after Protect
// its child cannot read the token from /proc/<ppid>/environ, and that
// without Protect it can (so the test shows what Protect changes). As
// root, CAP_SYS_PTRACE reads it all the same: that case is run and its
// outcome asserted, to record what Protect does not cover.
func TestChildCannotReadParentEnviron(t *testing.T) {
	bin, uid := helperBinary(t)
	run := func(mode string, cred *syscall.Credential) string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestProtectHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+mode, "INPUT_TOKEN="+helperSecret)
		cmd.Dir = "/"
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper %s: %v\n%s", mode, err, out)
		}
		return string(out)
	}
	var cred *syscall.Credential
	if uid == nobody {
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	if out := run("protect", cred); strings.Contains(out, helperSecret) || !strings.Contains(out, "Permission denied") {
		t.Fatalf("uid %d: the child of a protected process read its environment:\n%s", uid, out)
	}
	if out := run("plain", cred); !strings.Contains(out, helperSecret) {
		t.Fatalf("uid %d: control: the child of an unprotected process could not read its environment, so the test shows nothing:\n%s", uid, out)
	}
	if os.Geteuid() == 0 {
		out := run("protect", nil)
		if !strings.Contains(out, helperSecret) {
			t.Fatalf("as root the child did not read the protected environment; update the documentation of Protect:\n%s", out)
		}
		t.Logf("as root (CAP_SYS_PTRACE), a child still reads a protected parent's environ: Protect guards against processes of the same ordinary user only")
	}
}

// helperBinary returns a copy of the test binary that the user who runs
// the helper can execute, and that user: nobody when the test runs as
// root (root would bypass the protection), else the current user.
func helperBinary(t *testing.T) (string, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return os.Args[0], os.Geteuid()
	}
	dir, err := os.MkdirTemp("", "safeenv-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "safeenv.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin, nobody
}
