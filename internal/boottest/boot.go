package boottest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// initScript mounts the modules image like WSL's mini_init (WSL.md §4.2):
// ext4 read-only at /modules; nested layout if /modules/<release>/modules is
// a directory; an overlay with a tmpfs upper layer at /lib/modules/<release>.
// Then it modprobes the requested modules with kmod and reports.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
rel=$(uname -r)
echo "BOOTTEST uname=$rel"
mods=$(sed -n 's/.*boottest.modules=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /modules /lib/modules/$rel
if mount -t ext4 -o ro /dev/vda /modules; then
  lower=/modules
  layout=flat
  if [ -d /modules/$rel/modules ]; then lower=/modules/$rel/modules; layout=nested; fi
  echo "BOOTTEST layout=$layout"
  t=/lib/modules/$rel
  mkdir -p $t/rw
  mount -t tmpfs tmpfs $t/rw
  mkdir -p $t/rw/upper $t/rw/work
  if mount -t overlay overlay -o lowerdir=$lower,upperdir=$t/rw/upper,workdir=$t/rw/work,noatime,nosuid,nodev $t; then
    echo "BOOTTEST overlay=ok"
  else
    echo "BOOTTEST overlay=failed"
  fi
  for m in $mods; do
    if /sbin/modprobe $m; then echo "BOOTTEST loaded=$m"; else echo "BOOTTEST modprobe-failed=$m"; fi
  done
  echo "BOOTTEST lsmod-begin"
  /sbin/lsmod
  echo "BOOTTEST lsmod-end"
  echo "BOOTTEST tainted=$(cat /proc/sys/kernel/tainted)"
else
  echo "BOOTTEST mount=failed"
fi
echo "BOOTTEST done"
sync
reboot -f
`

// Initramfs writes an uncompressed newc initramfs with a static busybox,
// kmod (as modprobe, lsmod and modinfo) with its shared libraries, and the
// WSL-like init script.
func Initramfs(path string) error {
	busybox, err := findFile("/bin/busybox", "/usr/bin/busybox")
	if err != nil {
		return fmt.Errorf("boottest: busybox (apt-get install busybox-static): %w", err)
	}
	kmod, err := findFile("/usr/bin/kmod", "/bin/kmod")
	if err != nil {
		return fmt.Errorf("boottest: kmod: %w", err)
	}
	t := newTree()
	for _, d := range []string{"proc", "sys", "dev", "modules", "lib/modules", "tmp", "sbin", "usr/bin"} {
		t.dir(d)
	}
	t.chardev("dev/console", 5, 1)
	t.chardev("dev/null", 1, 3)
	if err := addFile(t, busybox, "bin/busybox", 0o755); err != nil {
		return err
	}
	if err := addFile(t, kmod, "usr/bin/kmod", 0o755); err != nil {
		return err
	}
	for _, n := range []string{"modprobe", "lsmod", "modinfo", "insmod"} {
		t.symlink("sbin/"+n, "/usr/bin/kmod")
	}
	libs, err := sharedLibs(kmod)
	if err != nil {
		return err
	}
	for _, l := range libs {
		if err := addFile(t, l, strings.TrimPrefix(l, "/"), 0o755); err != nil {
			return err
		}
	}
	t.file("init", []byte(initScript), 0o755)
	var buf bytes.Buffer
	if err := t.writeTo(&buf); err != nil {
		return fmt.Errorf("boottest: %w", err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func findFile(paths ...string) (string, error) {
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %s found", strings.Join(paths, ", "))
}

func addFile(t *tree, src, dst string, mode uint32) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("boottest: %w", err)
	}
	t.file(dst, b, mode)
	return nil
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibs lists the shared libraries (and the dynamic loader) a program
// needs, resolved through ldd, with symlinks followed.
func sharedLibs(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return nil, fmt.Errorf("boottest: ldd %s: %w", prog, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := lddLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		libs = append(libs, m[1])
	}
	return libs, nil
}

// Config describes one boot.
type Config struct {
	// Kernel is the bzImage to boot.
	Kernel string
	// Disk is the modules image (VHDX, VHD or raw); Format is qemu's
	// format name for it ("vhdx", "vpc", "raw").
	Disk, Format string
	// Modules are modprobed in order.
	Modules []string
	// Timeout bounds the whole boot (default 5 minutes).
	Timeout time.Duration
	// WorkDir holds the initramfs (default: a temporary directory).
	WorkDir string
}

// Result is what the guest reported.
type Result struct {
	// Release is `uname -r` in the guest.
	Release string
	// Layout is flat or nested, as the guest's init detected it.
	Layout string
	// Loaded and Failed list the modprobe outcomes.
	Loaded, Failed []string
	// Lsmod is the module names listed by lsmod.
	Lsmod []string
	// Tainted is /proc/sys/kernel/tainted after the modprobes (see
	// TaintUnsignedModule).
	Tainted uint64
	// Done is set when init reached its end.
	Done bool
	// Console is the full serial console output.
	Console string
}

// TaintUnsignedModule is the taint bit (E) a kernel with CONFIG_MODULE_SIG
// sets when it loads a module without a valid signature.
const TaintUnsignedModule = 1 << 13

// Boot runs qemu-system-x86_64 under TCG and parses the guest's report.
// The guest powers off by itself (reboot -f with -no-reboot); the context
// and Timeout bound the run.
func Boot(ctx context.Context, c Config) (*Result, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("boottest: qemu-system-x86_64 (apt-get install qemu-system-x86): %w", err)
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.Format == "" {
		c.Format = "vhdx"
	}
	dir := c.WorkDir
	if dir == "" {
		dir, err = os.MkdirTemp("", "boottest-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := Initramfs(initrd); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	args := []string{
		"-M", "pc", "-m", "512", "-smp", "1", "-accel", "tcg",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", c.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4 boottest.modules=" + strings.Join(c.Modules, ","),
		"-drive", "file=" + c.Disk + ",format=" + c.Format + ",if=virtio,readonly=on",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	runErr := cmd.Run()
	res := parse(out.String())
	if ctx.Err() != nil {
		return res, fmt.Errorf("boottest: guest did not power off within %s; console:\n%s", c.Timeout, tail(res.Console, 60))
	}
	if runErr != nil {
		return res, fmt.Errorf("boottest: qemu: %v; console:\n%s", runErr, tail(res.Console, 60))
	}
	if !res.Done {
		return res, fmt.Errorf("boottest: guest init did not finish; console:\n%s", tail(res.Console, 60))
	}
	return res, nil
}

func parse(console string) *Result {
	r := &Result{Console: console}
	inLsmod := false
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimRight(line, "\r")
		if inLsmod {
			if strings.Contains(line, "BOOTTEST lsmod-end") {
				inLsmod = false
				continue
			}
			f := strings.Fields(line)
			if len(f) > 0 && f[0] != "Module" {
				r.Lsmod = append(r.Lsmod, f[0])
			}
			continue
		}
		i := strings.Index(line, "BOOTTEST ")
		if i < 0 {
			continue
		}
		kv := line[i+len("BOOTTEST "):]
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "uname":
			r.Release = v
		case "layout":
			r.Layout = v
		case "loaded":
			r.Loaded = append(r.Loaded, v)
		case "modprobe-failed":
			r.Failed = append(r.Failed, v)
		case "lsmod-begin":
			inLsmod = true
		case "tainted":
			r.Tainted, _ = strconv.ParseUint(v, 10, 64)
		case "done":
			r.Done = true
		}
	}
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
