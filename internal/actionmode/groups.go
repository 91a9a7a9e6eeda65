package actionmode

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"
	"github.com/wsl-modules/wsl-modules-action/internal/compilelog"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// groups prints the pipeline's stages and module builds as log groups.
// GitHub does not nest groups, so a module's group closes the stage's.
type groups struct {
	a         *githubactions.Action
	out       io.Writer
	workspace string
	open      bool
	// annotations counts the compiler error annotations written.
	annotations int
	// timings are the stages' wall times per kernel, in order.
	timings map[string][]stageTiming
}

// stageTiming is one stage's wall time, for the step summary.
type stageTiming struct {
	stage  string
	took   time.Duration
	failed bool
}

func (g *groups) close() {
	if g.open {
		g.a.EndGroup()
		g.open = false
	}
}

// stage opens a stage's log group and times it.
func (g *groups) stage(kernel, stage string) func(error) {
	g.close()
	g.a.Group(kernel + ": " + stage)
	g.open = true
	start := time.Now()
	return func(err error) {
		if err != nil {
			fmt.Fprintf(g.out, "%s: %s failed: %v\n", kernel, stage, err)
		}
		if g.timings == nil {
			g.timings = map[string][]stageTiming{}
		}
		g.timings[kernel] = append(g.timings[kernel], stageTiming{stage: stage, took: time.Since(start), failed: err != nil})
		g.close()
	}
}

func (g *groups) module(r pipeline.ModuleReport) {
	g.close()
	g.a.Group(fmt.Sprintf("module %s: %s (%s, %.1fs, %d kbuild steps)", r.Name, r.Status, progress.Bytes(r.Bytes), r.Seconds, r.Steps))
	if f, err := os.Open(r.LogPath); err == nil {
		g.printLog(f, r.LogPath)
		f.Close()
	}
	g.a.EndGroup()
	if r.Status != manifest.StatusFailed {
		return
	}
	var errs []compilelog.CompileError
	if f, err := os.Open(r.LogPath); err == nil {
		errs = compilelog.CompileErrors(f, r.BuildDir, r.SourceDir, maxAnnotationsPerModule)
		f.Close()
	}
	for _, e := range errs {
		if g.annotations >= maxAnnotations {
			break
		}
		g.annotations++
		fields := map[string]string{"file": g.relative(e.File), "line": strconv.Itoa(e.Line), "title": "module " + r.Name}
		if e.Column > 0 {
			fields["col"] = strconv.Itoa(e.Column)
		}
		g.a.WithFieldsMap(fields).Errorf("%s: %s", e.Severity, e.Message)
	}
	if len(errs) == 0 {
		g.a.Errorf("module %s failed on kernel %s: %s", r.Name, r.Kernel, r.Error)
	}
}

// relative makes a path relative to the workspace when it is inside it,
// as annotations need.
func (g *groups) relative(p string) string {
	if g.workspace == "" {
		return p
	}
	if rel, err := filepath.Rel(g.workspace, p); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return p
}

// printLog prints a module's build log inside the group with workflow
// commands stopped: the log is third-party output, and a line such as
// "::set-output" or "::add-mask" in it must stay text. The end token is
// random, so the log cannot end the stop itself.
func (g *groups) printLog(r io.Reader, path string) {
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	fmt.Fprintf(g.out, "::stop-commands::%s\n", token)
	n, _ := io.Copy(g.out, io.LimitReader(r, maxLogInGroup))
	if n == maxLogInGroup {
		fmt.Fprintf(g.out, "\n[log truncated; the whole log is in build-logs.tar.gz: %s]", path)
	}
	fmt.Fprintf(g.out, "\n::%s::\n", token)
}
