package boottest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// TestInitramfsReadByCpio checks our newc writer with GNU cpio: the listing
// has the device node, symlinks and files, and extraction gives back the
// same bytes.
func TestInitramfsReadByCpio(t *testing.T) {
	cpio := testenv.Tool(t, "cpio")
	testenv.Tool(t, "busybox")
	dir := t.TempDir()
	img := filepath.Join(dir, "initramfs.cpio")
	if err := Initramfs(img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = f
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	list := string(out)
	for _, want := range []string{"init", "bin/busybox", "usr/bin/kmod", "sbin/modprobe -> /usr/bin/kmod", "dev/console"} {
		if !strings.Contains(list, want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, list)
		}
	}
	if !strings.Contains(list, "crw-------") {
		t.Errorf("no character device in listing:\n%s", list)
	}
	x := filepath.Join(dir, "x")
	os.Mkdir(x, 0o755)
	f.Seek(0, 0)
	cmd = exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = x
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v %s", err, out)
	}
	a, _ := os.ReadFile("/bin/busybox")
	b, err := os.ReadFile(filepath.Join(x, "bin/busybox"))
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("busybox differs after extraction: %v", err)
	}
	init, _ := os.ReadFile(filepath.Join(x, "init"))
	if string(init) != initScript {
		t.Fatal("init script differs")
	}
}

func TestParseConsole(t *testing.T) {
	r := parse("noise\r\nBOOTTEST uname=6.12.1-x\nBOOTTEST layout=flat\nBOOTTEST loaded=vfat\nBOOTTEST modprobe-failed=nope\nBOOTTEST lsmod-begin\nModule Size Used by\nvfat 20480 0\nfat 8000 1 vfat\nBOOTTEST lsmod-end\nBOOTTEST done\n")
	if r.Release != "6.12.1-x" || r.Layout != "flat" || !r.Done || len(r.Loaded) != 1 || len(r.Failed) != 1 || strings.Join(r.Lsmod, ",") != "vfat,fat" {
		t.Fatalf("%+v", r)
	}
}
