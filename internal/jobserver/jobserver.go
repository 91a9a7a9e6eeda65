package jobserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Jobserver is one GNU make jobserver (make 4.x "pipe" style) shared by
// every make this process runs, so that the total number of compile jobs
// across concurrent builds stays at Jobs.
//
// The pipe starts with Jobs tokens. Each make started through Command
// first takes one token on the Go side, which stands for the make's own
// implicit job slot; it is given back when the make exits. The makes take
// further tokens from the pipe for parallel jobs. So with M makes running,
// at most M + (Jobs - M) = Jobs jobs run at once.
type Jobserver struct {
	// Jobs is the total number of job slots.
	Jobs int
	// r and w are the Go side of the pipe (non-blocking, pollable); cr and
	// cw are separately opened descriptions of the same pipe, blocking,
	// handed to the makes.
	r, w, cr, cw *os.File
}

// New creates a jobserver with jobs slots (at least 1).
func New(jobs int) (*Jobserver, error) {
	if jobs < 1 {
		jobs = 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("jobserver: %w", err)
	}
	js := &Jobserver{Jobs: jobs, r: r, w: w}
	// Open the pipe again through /proc so that the makes get blocking
	// descriptors while ours stay non-blocking (O_NONBLOCK belongs to the
	// open file description, which dup would share).
	js.cr, err = reopen(r, os.O_RDONLY)
	if err == nil {
		js.cw, err = reopen(w, os.O_WRONLY)
	}
	if err != nil {
		js.Close()
		return nil, fmt.Errorf("jobserver: %w", err)
	}
	if _, err := w.Write([]byte(strings.Repeat("+", jobs))); err != nil {
		js.Close()
		return nil, fmt.Errorf("jobserver: %w", err)
	}
	return js, nil
}

func reopen(f *os.File, flag int) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd uintptr
	if err := sc.Control(func(x uintptr) { fd = x }); err != nil {
		return nil, err
	}
	return os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(fd)), flag, 0)
}

// Close releases the pipe.
func (js *Jobserver) Close() error {
	var errs []error
	for _, f := range []*os.File{js.r, js.w, js.cr, js.cw} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Acquire takes one token, waiting until one is free or ctx ends. A token
// that arrives after ctx ended is given back.
func (js *Jobserver) Acquire(ctx context.Context) error {
	ch := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		for {
			n, err := js.r.Read(b)
			if n == 1 {
				ch <- nil
				return
			}
			if err != nil {
				ch <- fmt.Errorf("jobserver: %w", err)
				return
			}
		}
	}()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		go func() {
			if err := <-ch; err == nil {
				js.Release()
			}
		}()
		return ctx.Err()
	}
}

// Release gives one token back.
func (js *Jobserver) Release() {
	js.w.Write([]byte{'+'})
}

// MakeFlags returns the MAKEFLAGS value for a make started with the
// jobserver descriptors at fds 3 and 4 (see Command).
func (js *Jobserver) MakeFlags() string {
	return fmt.Sprintf(" -j%d --jobserver-auth=3,4", js.Jobs)
}

// Setup prepares cmd to join the jobserver: the pipe as fds 3 and 4 and
// MAKEFLAGS in its environment (replacing any inherited MAKEFLAGS, MFLAGS
// and MAKELEVEL). cmd.Env must already be set.
func (js *Jobserver) Setup(cmd *exec.Cmd) {
	cmd.ExtraFiles = []*os.File{js.cr, js.cw}
	env := cmd.Env[:0:0]
	for _, e := range cmd.Env {
		if strings.HasPrefix(e, "MAKEFLAGS=") || strings.HasPrefix(e, "MFLAGS=") || strings.HasPrefix(e, "MAKELEVEL=") {
			continue
		}
		env = append(env, e)
	}
	cmd.Env = append(env, "MAKEFLAGS="+js.MakeFlags())
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// pipeDrain bounds how long RunGroup reads a command's output after the
// command exited.
var pipeDrain = 30 * time.Second

// Run acquires a token, runs cmd as a jobserver client and releases the
// token when cmd has exited. On cancellation the whole process group is
// killed.
func (js *Jobserver) Run(ctx context.Context, cmd *exec.Cmd) error {
	if err := js.Acquire(ctx); err != nil {
		return err
	}
	defer js.Release()
	js.Setup(cmd)
	return RunGroup(ctx, cmd)
}

// RunGroup starts cmd in its own process group and kills the group when
// ctx ends. When cmd's output goes through a pipe (a writer that is not
// a file), a child left holding it cannot keep Wait waiting: after cmd
// exits its output is read for at most pipeDrain (unless cmd sets its
// own WaitDelay), and what is left of its process group is killed.
func RunGroup(ctx context.Context, cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = pipeDrain
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	// What is left of the group (a stray background child) goes too.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return nil // cmd itself succeeded; a stray child held its output
	}
	return err
}
