package actionmode

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// writeActionResults sets the outputs and writes the step summary, with
// the stages' timings per kernel (work dir name).
func writeActionResults(a *githubactions.Action, o pipeline.Options, res *pipeline.Result, runErr error, timings map[string][]stageTiming) {
	if res == nil {
		a.SetOutput("built", "false")
		a.AddStepSummary(fmt.Sprintf("## WSL kernel modules\n\n:x: failed before building: %s\n", summaryText(runErr)))
		return
	}
	setPlanOutputs(a, o, res)
	if o.Stage == pipeline.StagePlan {
		return
	}
	setBuildOutputs(a, res)
	a.AddStepSummary(stepSummary(res, runErr, timings))
}

// setPlanOutputs sets the outputs known after planning: the resolved
// directories and, with a plan, its cache keys and tags.
func setPlanOutputs(a *githubactions.Action, o pipeline.Options, res *pipeline.Result) {
	// Resolved directories, for action.yml's actions/cache steps.
	a.SetOutput("cache-dir", o.CacheDir)
	a.SetOutput("work-dir", o.WorkDir)
	if p := res.Plan; p != nil {
		a.SetOutput("cache-key", p.CacheKey)
		a.SetOutput("cache-restore-prefix", p.CacheRestorePrefix)
		tags, _ := json.Marshal(append([]string{}, p.Build...))
		a.SetOutput("tags", string(tags))
	}
}

// setBuildOutputs sets the outputs of a run past planning: whether it
// built and wrote a kernel cache entry, and the last kernel's files.
func setBuildOutputs(a *githubactions.Action, res *pipeline.Result) {
	built := "false"
	if res.Built() {
		built = "true"
	}
	a.SetOutput("built", built)
	written := "false"
	for _, k := range res.Kernels {
		if k.KernelCacheWritten {
			written = "true"
		}
	}
	a.SetOutput("kernel-cache-written", written)
	if k := res.Last(); k != nil {
		a.SetOutput("kernel-tag", k.Tag)
		a.SetOutput("kernel-release", k.Release)
		url := ""
		if k.Publish != nil {
			url = k.Publish.URL
		}
		a.SetOutput("release-url", url)
		a.SetOutput("vhdx-path", k.VHDX)
		a.SetOutput("bzimage-path", k.KernelImage)
		a.SetOutput("checksums-path", k.DistDir+"/SHA256SUMS") // for actions/attest-build-provenance; action.yml clears it when absent
	}
}

// stepSummary renders the step summary: the selection, a section per
// kernel and runErr, if any.
func stepSummary(res *pipeline.Result, runErr error, timings map[string][]stageTiming) string {
	var b strings.Builder
	b.WriteString("## WSL kernel modules\n\n")
	if res.Plan != nil && res.Plan.Summary != "" {
		fmt.Fprintf(&b, "Selection: %s\n\n", res.Plan.Summary)
	}
	if len(res.Kernels) == 0 {
		b.WriteString("Nothing to build.\n")
	}
	for _, k := range res.Kernels {
		writeKernelSummary(&b, k, timings[k.Name])
	}
	if runErr != nil {
		fmt.Fprintf(&b, ":x: **Failed:** %s\n", summaryText(runErr))
	}
	return b.String()
}

// writeKernelSummary writes the step summary's section of one kernel.
func writeKernelSummary(b *strings.Builder, k *pipeline.KernelResult, timings []stageTiming) {
	fmt.Fprintf(b, "### %s\n\n", k.Tag)
	switch {
	case k.UpToDate:
		b.WriteString("Up to date: a published release already has this build; nothing was built.\n\n")
		return
	case k.Release != "":
		fmt.Fprintf(b, "- Kernel release (`uname -r`): `%s`\n", k.Release)
	}
	if k.Mode != "" {
		fmt.Fprintf(b, "- Mode: **%s**: %s\n", k.Mode, k.ModeReason)
	}
	if k.Publish != nil {
		if k.Publish.URL != "" {
			fmt.Fprintf(b, "- Release: [%s](%s) (%s)\n", k.Publish.Tag, k.Publish.URL, k.Publish.Status)
		} else {
			fmt.Fprintf(b, "- Release: %s (%s)\n", k.Publish.Tag, k.Publish.Status)
		}
	}
	if k.Manifest != nil && k.Manifest.Image != nil {
		fmt.Fprintf(b, "- `modules.vhdx`: %s, sha256 `%s`\n", progress.Bytes(k.Manifest.Image.Size), k.Manifest.Image.SHA256)
	}
	if len(k.Modules) > 0 {
		writeModuleTable(b, k.Modules)
	}
	if len(timings) > 0 {
		writeTimingTable(b, k, timings)
	}
	b.WriteString("\n")
}

// writeTimingTable writes the table of a kernel's stage times; the kernel
// stage says whether the cache served it or how many kbuild steps it ran.
func writeTimingTable(b *strings.Builder, k *pipeline.KernelResult, timings []stageTiming) {
	b.WriteString("\n| Stage | Time | |\n|---|---:|---|\n")
	var total time.Duration
	for _, t := range timings {
		total += t.took
		note := ""
		switch {
		case t.failed:
			note = ":x: failed"
		case t.stage == "kernel" && k.KernelCacheWritten && k.KernelSteps > 0:
			note = fmt.Sprintf("%s: %d kbuild steps", kernelWork(k), k.KernelSteps)
		case t.stage == "kernel" && !k.KernelCacheWritten:
			note = "kernel cache hit"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", t.stage, t.took.Round(100*time.Millisecond), note)
	}
	fmt.Fprintf(b, "| **total** | **%s** | |\n", total.Round(100*time.Millisecond))
}

// kernelWork names what the kernel stage did when it made a cache entry.
func kernelWork(k *pipeline.KernelResult) string {
	if k.Mode == pipeline.ModeStock {
		return "modules_prepare"
	}
	return "built"
}

// writeModuleTable writes the table of a kernel's module builds.
func writeModuleTable(b *strings.Builder, mods []pipeline.ModuleReport) {
	b.WriteString("\n| Module | Status | Size | Time | kbuild steps |\n|---|---|---:|---:|---:|\n")
	for _, m := range mods {
		status := m.Status
		switch m.Status {
		case manifest.StatusOK:
			status = ":white_check_mark: ok"
		case manifest.StatusFailed:
			status = ":x: failed: " + strings.ReplaceAll(m.Error, "|", "\\|")
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f s | %d |\n", m.Name, status, progress.Bytes(m.Bytes), m.Seconds, m.Steps)
	}
}

func summaryText(err error) string {
	if err == nil {
		return ""
	}
	return "\n```\n" + err.Error() + "\n```\n"
}
