package fetch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/githubfake"
	"github.com/wsl-modules/wsl-modules-action/internal/kver"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

const kernelRepo = "microsoft/WSL2-Linux-Kernel"

// realisticTags returns a few hundred kernel tags across the 5.15, 6.1,
// 6.6 and 6.18 series plus tags that must be ignored, shuffled.
func realisticTags() []string {
	var names []string
	add := func(series string, from, to, revs int) {
		for p := from; p <= to; p += 1 {
			for r := 1; r <= 1+(p%revs); r++ {
				names = append(names, fmt.Sprintf("linux-msft-wsl-%s.%d.%d", series, p, r))
			}
		}
	}
	add("5.15", 1, 167, 3)
	add("6.1", 21, 60, 2)
	add("6.6", 1, 120, 2)
	add("6.18", 20, 40, 3)
	names = append(names, "linux-msft-5.4.72", "rolling-lts/wsl/5.15.90.1", "linux-msft-wsl-6.6.87.2-rc1",
		"v6.6", "linux-msft-wsl-6.6", "wsl-6.6.87.2", "linux-msft-wsl-6.6.x.1")
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names
}

// sortV orders names with GNU sort -V, an independent version sort.
func sortV(t *testing.T, names []string) []string {
	t.Helper()
	cmd := exec.Command("sort", "-V")
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sort -V: %v", err)
	}
	return strings.Fields(string(out))
}

// oracle is the list of valid tags in version order, from sort -V.
func oracle(t *testing.T, names []string) []string {
	var valid []string
	for _, n := range names {
		if strings.HasPrefix(n, "linux-msft-wsl-") {
			parts := strings.Split(strings.TrimPrefix(n, "linux-msft-wsl-"), ".")
			ok := len(parts) == 4
			for _, p := range parts {
				if p == "" || strings.Trim(p, "0123456789") != "" {
					ok = false
				}
			}
			if ok {
				valid = append(valid, n)
			}
		}
	}
	return sortV(t, valid)
}

func newFake(t *testing.T, names []string) (*githubfake.Server, *githubapi.Client, *bytes.Buffer) {
	t.Helper()
	clock := githubfake.NewClock(time.Now())
	fake := githubfake.NewT(t, githubfake.Options{Token: "tok-" + t.Name()})
	var tags []githubfake.Tag
	for _, n := range names {
		tags = append(tags, githubfake.Tag{Name: n})
	}
	fake.AddTags(kernelRepo, tags...)
	fake.AddTags("me/mods") // the target repository exists
	var log bytes.Buffer
	c, err := githubapi.New(githubapi.Options{Getenv: fake.Getenv(nil), Sleep: clock.Sleep, Log: progress.New(&log)})
	if err != nil {
		t.Fatal(err)
	}
	return fake, c, &log
}

func tagNames(tags []Tag) []string {
	var out []string
	for _, t := range tags {
		out = append(out, t.Name)
	}
	return out
}

// Both listing endpoints, over several pages, give the sort -V order, and
// non-matching tags are ignored with a debug line.
func TestListTags(t *testing.T) {
	names := realisticTags()
	want := oracle(t, names)
	if len(want) < 300 {
		t.Fatalf("only %d valid tags in the fixture", len(want))
	}
	fake, c, log := newFake(t, names)
	paged, err := ListTags(context.Background(), c, kernelRepo, progress.New(log))
	if err != nil {
		t.Fatal(err)
	}
	pages := 0
	for _, r := range fake.Requests() {
		if r.Route == githubfake.RouteTags {
			pages++
		}
	}
	if wantPages := (len(names) + 99) / 100; pages != wantPages {
		t.Errorf("%d tag pages requested, want %d", pages, wantPages)
	}
	refs, err := ListTagRefs(context.Background(), c, kernelRepo, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]Tag{"tags": paged, "matching-refs": refs} {
		if g := tagNames(got); strings.Join(g, " ") != strings.Join(want, " ") {
			t.Errorf("%s: order differs from sort -V (%d vs %d tags)", name, len(g), len(want))
		}
	}
	if paged[0].Commit == "" {
		t.Error("tags endpoint: no commit")
	}
	if !strings.Contains(log.String(), `ignoring tag "rolling-lts/wsl/5.15.90.1"`) {
		t.Errorf("no debug line for an ignored tag:\n%s", log)
	}
}

func TestListTagsRetries(t *testing.T) {
	fake, c, log := newFake(t, realisticTags())
	fake.Fail(githubfake.RouteTags, 2, http.StatusBadGateway)
	if _, err := ListTags(context.Background(), c, kernelRepo, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "502 Bad Gateway; retrying") {
		t.Errorf("no retries logged:\n%s", log)
	}
}

func TestSelect(t *testing.T) {
	names := realisticTags()
	want := oracle(t, names)
	newestIn := func(series string) string {
		last := ""
		for _, n := range want {
			if strings.HasPrefix(n, "linux-msft-wsl-"+series+".") {
				last = n
			}
		}
		return last
	}
	for _, paginated := range []bool{false, true} {
		_, c, _ := newFake(t, names)
		released := ""
		sel := func(track string) []string {
			t.Helper()
			s, err := Select(context.Background(), c, SelectOptions{Track: track, Released: released, Paginated: paginated, MaxTags: 3})
			if err != nil {
				t.Fatalf("track %s: %v", track, err)
			}
			for _, x := range s.Selected {
				if x.Reason == "" {
					t.Errorf("track %s: no reason for %s", track, x.Tag.Name)
				}
			}
			return tagNames(tagsOf(s.Selected))
		}
		check := func(track string, got []string, exp ...string) {
			t.Helper()
			if strings.Join(got, " ") != strings.Join(exp, " ") {
				t.Errorf("paginated=%v track %s: got %v, want %v", paginated, track, got, exp)
			}
		}
		check("latest", sel("latest"), want[len(want)-1])
		check("6.6", sel("6.6"), newestIn("6.6"))
		check("6.18", sel("6.18"), newestIn("6.18"))
		check("5.15", sel("5.15"), newestIn("5.15"))
		check("exact", sel("linux-msft-wsl-6.6.87.2"), "linux-msft-wsl-6.6.87.2")
		check("exact short", sel("6.6.87.2"), "linux-msft-wsl-6.6.87.2")
		// Nothing released yet: start from the newest.
		check("all-new (none released)", sel("all-new"), want[len(want)-1])

		// Released: the sixth newest tag. all-new picks the next three, oldest first.
		released = want[len(want)-6]
		check("all-new", sel("all-new"), want[len(want)-5:len(want)-2]...)

		for _, bad := range []string{"6.7", "linux-msft-wsl-6.6.999.1"} {
			if _, err := Select(context.Background(), c, SelectOptions{Track: bad, Paginated: paginated}); err == nil {
				t.Errorf("track %s: no error", bad)
			}
		}
	}
	for _, bad := range []string{"newest", "wsl-", "wsl-2", "wsl-latest", "wsl-2.6.x", "wsl-2.6.1.0.0", "WSL"} {
		if err := CheckTrack(bad); err == nil {
			t.Errorf("CheckTrack accepted %q", bad)
		}
	}
	for _, good := range []string{"wsl", "wsl-prerelease", "wsl-2.6.1", "wsl-2.6.1.0", "wsl-2.10"} {
		if err := CheckTrack(good); err != nil {
			t.Errorf("CheckTrack(%q): %v", good, err)
		}
	}
}

// Every kernel-tag track marks the WSL releases (given in SelectOptions.WSL)
// that ship the chosen kernel, and says so in the Reason.
func TestSelectMarksWSL(t *testing.T) {
	names := realisticTags()
	want := oracle(t, names)
	_, c, _ := newFake(t, names)
	wsl := []WSLRelease{
		{Version: "2.6.1", KernelTag: "linux-msft-wsl-6.6.87.2"},
		{Version: "2.6.0", Prerelease: true, KernelTag: "linux-msft-wsl-6.6.87.2"},
		{Version: "2.5.1", KernelError: "no packages.config at tag 2.5.1"},
		{Version: "2.9.4", Prerelease: true, KernelTag: want[len(want)-1]},
	}
	for track, w := range map[string]struct{ shipped, reason string }{
		"6.6.87.2": {"2.6.1 2.6.0", "exact tag requested; shipped by WSL 2.6.1, 2.6.0 (pre-release)"},
		"latest":   {"2.9.4", "; shipped by WSL 2.9.4 (pre-release)"},
		"6.6":      {"", "series 6.6: its newest tag; no WSL release seen ships it"},
		"all-new":  {"2.9.4", "; shipped by WSL 2.9.4 (pre-release)"},
	} {
		s, err := Select(context.Background(), c, SelectOptions{Track: track, WSL: wsl})
		if err != nil {
			t.Fatalf("track %s: %v", track, err)
		}
		x := s.Selected[0]
		if got := strings.Join(versions(x.WSL), " "); got != w.shipped {
			t.Errorf("track %s (%s): shipped by %q, want %q", track, x.Tag.Name, got, w.shipped)
		}
		if !strings.Contains(x.Reason, w.reason) {
			t.Errorf("track %s: reason %q, want %q", track, x.Reason, w.reason)
		}
		if len(s.WSL) != len(wsl) {
			t.Errorf("track %s: Selection.WSL has %d releases", track, len(s.WSL))
		}
	}
	// Without WSL, nothing is marked and no WSL request is made.
	s, err := Select(context.Background(), c, SelectOptions{Track: "latest"})
	if err != nil || len(s.Selected[0].WSL) != 0 || strings.Contains(s.Selected[0].Reason, "WSL") {
		t.Errorf("latest without WSL: %+v, %v", s.Selected, err)
	}
}

func tagsOf(s []Selected) []Tag {
	var out []Tag
	for _, x := range s {
		out = append(out, x.Tag)
	}
	return out
}

func TestSelectFromOrder(t *testing.T) {
	var tags []Tag
	for _, n := range []string{"linux-msft-wsl-6.6.9.1", "linux-msft-wsl-6.6.10.1", "linux-msft-wsl-6.6.100.1"} {
		v, _ := kver.Parse(n)
		tags = append(tags, Tag{Name: n, Version: v})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Name < tags[j].Name }) // by name: wrong order
	sortTags(tags)
	if tags[2].Name != "linux-msft-wsl-6.6.100.1" || tags[0].Name != "linux-msft-wsl-6.6.9.1" {
		t.Errorf("sorted by name, not version: %v", tagNames(tags))
	}
}
