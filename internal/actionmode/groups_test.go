package actionmode

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sethvargo/go-githubactions"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/pipeline"
)

// A module log that carries workflow commands is printed between
// stop-commands markers with a random token, so the runner reads those
// lines as text; the log cannot guess the token to end the stop.
func TestModuleLogCannotIssueWorkflowCommands(t *testing.T) {
	log := filepath.Join(t.TempDir(), "evil.log")
	body := "  CC [M]  evil.o\n::add-mask::nothing\n::set-output name=release-url::https://evil.example\n::endgroup::\n::stop-commands::guess\n"
	os.WriteFile(log, []byte(body), 0o644)
	var out strings.Builder
	a := githubactions.New(githubactions.WithWriter(&out), githubactions.WithGetenv(func(string) string { return "" }))
	g := &groups{a: a, out: &out}
	g.module(pipeline.ModuleReport{Module: manifest.Module{Name: "evil", Status: manifest.StatusOK}, LogPath: log})
	text := out.String()
	m := regexp.MustCompile(`(?m)^::stop-commands::([0-9a-f]{32})$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no stop-commands marker:\n%s", text)
	}
	start := strings.Index(text, m[0])
	end := strings.Index(text, "\n::"+m[1]+"::\n")
	if end < 0 {
		t.Fatalf("the stop is not ended with the token:\n%s", text)
	}
	inside := text[start:end]
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if !strings.Contains(inside, l) {
			t.Errorf("log line %q is not inside the stop", l)
		}
	}
	if !strings.HasPrefix(text, "::group::module evil") || !strings.HasSuffix(strings.TrimSpace(text), "::endgroup::") {
		t.Errorf("group markers: %q", text)
	}
	// Two logs get two different tokens.
	out.Reset()
	g.module(pipeline.ModuleReport{Module: manifest.Module{Name: "evil", Status: manifest.StatusOK}, LogPath: log})
	if m2 := regexp.MustCompile(`(?m)^::stop-commands::([0-9a-f]{32})$`).FindStringSubmatch(out.String()); m2 == nil || m2[1] == m[1] {
		t.Errorf("token reused or missing: %v", m2)
	}
}
