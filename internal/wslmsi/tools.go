package wslmsi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// tools are the external programs the extraction runs.
type tools struct {
	msiinfo  string // msitools' msiinfo
	sevenZip string // 7-Zip: 7z (p7zip-full, 7zip) or 7zz
}

// findTools locates msiinfo and 7-Zip on PATH.
func findTools() (*tools, error) {
	t := &tools{}
	var err error
	if t.msiinfo, err = exec.LookPath("msiinfo"); err != nil {
		return nil, errors.New("msiinfo not found on PATH (install msitools: apt-get install msitools)")
	}
	for _, name := range []string{"7z", "7zz"} {
		if t.sevenZip, err = exec.LookPath(name); err == nil {
			return t, nil
		}
	}
	return nil, errors.New("7-Zip (7z or 7zz) not found on PATH (install it: apt-get install p7zip-full on Debian 12, 7zip on Debian 13 or Ubuntu 24.04)")
}

// maxStderr bounds the part of a tool's error output kept for an error.
const maxStderr = 4 << 10

// limitedBuffer keeps the first maxStderr bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxStderr - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// run runs a tool with stdout going to w and an environment without CI
// secrets (and a UTF-8 C locale, so output is not localized).
func (t *tools) run(ctx context.Context, w io.Writer, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(safeenv.Environ("LC_ALL", "LANG", "LANGUAGE"), "LC_ALL=C.UTF-8")
	var stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		if msg == "" {
			msg = "no error output"
		}
		return fmt.Errorf("%s %s: %v: %s", filepath.Base(prog), strings.Join(args[:min(len(args), 2)], " "), err, msg)
	}
	return nil
}

// output runs a tool and returns its standard output. 7-Zip reports
// archive errors there, so on failure its error lines join the error.
func (t *tools) output(ctx context.Context, prog string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	err := t.run(ctx, &out, prog, args...)
	if err != nil && ctx.Err() == nil {
		var lines []string
		for _, l := range strings.Split(out.String(), "\n") {
			if l = strings.TrimSpace(l); strings.Contains(strings.ToLower(l), "error") || strings.HasPrefix(l, "Unexpected") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			err = fmt.Errorf("%w; %s", err, strings.Join(lines[:min(len(lines), 5)], "; "))
		}
	}
	return out.Bytes(), err
}

// versions names the tools and their versions for meta.json.
func (t *tools) versions(ctx context.Context) string {
	first := func(b []byte) string {
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				return l
			}
		}
		return "unknown version"
	}
	mi, _ := t.output(ctx, t.msiinfo, "--version")
	sz, _ := t.output(ctx, t.sevenZip, "i")
	v := first(sz)
	if i := strings.Index(v, " : "); i > 0 {
		v = v[:i]
	}
	return first(mi) + "; " + v
}
