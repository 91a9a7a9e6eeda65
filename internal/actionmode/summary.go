package actionmode

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sethvargo/go-githubactions"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// writeActionResults sets the outputs and writes the step summary.
func writeActionResults(a *githubactions.Action, o pipeline.Options, res *pipeline.Result, runErr error) {
	if res == nil {
		a.SetOutput("built", "false")
		a.AddStepSummary(fmt.Sprintf("## WSL kernel modules\n\n:x: failed before building: %s\n", summaryText(runErr)))
		return
	}
	// Resolved directories, for action.yml's actions/cache steps.
	a.SetOutput("cache-dir", o.CacheDir)
	a.SetOutput("work-dir", o.WorkDir)
	if p := res.Plan; p != nil {
		a.SetOutput("cache-key", p.CacheKey)
		a.SetOutput("cache-restore-prefix", p.CacheRestorePrefix)
		tags, _ := json.Marshal(append([]string{}, p.Build...))
		a.SetOutput("tags", string(tags))
	}
	if o.Stage == pipeline.StagePlan {
		return
	}
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

	var b strings.Builder
	b.WriteString("## WSL kernel modules\n\n")
	if res.Plan != nil && res.Plan.Summary != "" {
		fmt.Fprintf(&b, "Selection: %s\n\n", res.Plan.Summary)
	}
	if len(res.Kernels) == 0 {
		b.WriteString("Nothing to build.\n")
	}
	for _, k := range res.Kernels {
		fmt.Fprintf(&b, "### %s\n\n", k.Tag)
		switch {
		case k.UpToDate:
			b.WriteString("Up to date: a published release already has this build; nothing was built.\n\n")
			continue
		case k.Release != "":
			fmt.Fprintf(&b, "- Kernel release (`uname -r`): `%s`\n", k.Release)
		}
		if k.Mode != "" {
			fmt.Fprintf(&b, "- Mode: **%s**: %s\n", k.Mode, k.ModeReason)
		}
		if k.Publish != nil {
			if k.Publish.URL != "" {
				fmt.Fprintf(&b, "- Release: [%s](%s) (%s)\n", k.Publish.Tag, k.Publish.URL, k.Publish.Status)
			} else {
				fmt.Fprintf(&b, "- Release: %s (%s)\n", k.Publish.Tag, k.Publish.Status)
			}
		}
		if k.Manifest != nil && k.Manifest.Image != nil {
			fmt.Fprintf(&b, "- `modules.vhdx`: %s, sha256 `%s`\n", progress.Bytes(k.Manifest.Image.Size), k.Manifest.Image.SHA256)
		}
		if len(k.Modules) > 0 {
			b.WriteString("\n| Module | Status | Size | Time |\n|---|---|---:|---:|\n")
			for _, m := range k.Modules {
				status := m.Status
				switch m.Status {
				case manifest.StatusOK:
					status = ":white_check_mark: ok"
				case manifest.StatusFailed:
					status = ":x: failed: " + strings.ReplaceAll(m.Error, "|", "\\|")
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %.1f s |\n", m.Name, status, progress.Bytes(m.Bytes), m.Seconds)
			}
		}
		b.WriteString("\n")
	}
	if runErr != nil {
		fmt.Fprintf(&b, ":x: **Failed:** %s\n", summaryText(runErr))
	}
	a.AddStepSummary(b.String())
}

func summaryText(err error) string {
	if err == nil {
		return ""
	}
	return "\n```\n" + err.Error() + "\n```\n"
}
