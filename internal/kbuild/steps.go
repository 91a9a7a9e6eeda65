package kbuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// stepsFile records, in the cache, how many kbuild steps earlier builds
// took, so a build of the same config shows a percentage and an ETA.
const stepsFile = "steps.json"

// stepRecord is one earlier build in stepsFile.
type stepRecord struct {
	Steps   int64   `json:"steps"`
	Release string  `json:"release"`
	Seconds float64 `json:"seconds"`
	Date    string  `json:"date"`
}

// stepsKey identifies "the same config" for a step count: the input
// config without its comment lines (the version banner changes with every
// tag), the fragment, the arch and the make goals.
func (b *kernelBuild) stepsKey(goals []string) string {
	h := sha256.New()
	for _, l := range strings.Split(string(b.inputConfig), "\n") {
		if !strings.HasPrefix(l, "#") || strings.HasSuffix(l, " is not set") {
			fmt.Fprintln(h, l)
		}
	}
	if f := b.o.Fragment; f != nil {
		fmt.Fprintf(h, "fragment %s\n", f.Text())
	}
	fmt.Fprintf(h, "arch %s\ngoals %s\n", b.o.Arch, strings.Join(goals, " "))
	return hex.EncodeToString(h.Sum(nil))
}

// countedMake runs make with the given goals while counting its kbuild
// steps, reporting about once a minute with a percentage and an ETA when
// an earlier build of the same config recorded its total; the count is
// recorded for the next build.
func (b *kernelBuild) countedMake(ctx context.Context, release string, args ...string) (int64, error) {
	var goals []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			goals = append(goals, a)
		}
	}
	key := b.stepsKey(goals)
	records := readSteps(b.o.CacheDir)
	total, from := int64(0), "no earlier build of this config recorded its steps"
	if r, ok := records[key]; ok {
		total, from = r.Steps, fmt.Sprintf("the build of %s on %s", r.Release, r.Date)
	}
	u := b.o.Progress.Units("kernel: make "+strings.Join(goals, " "), total, from, time.Minute)
	log := b.log
	b.log = io.MultiWriter(log, u.Writer())
	start := time.Now()
	err := b.make(ctx, args...)
	b.log = log
	u.Done()
	if err == nil && b.o.CacheDir != "" {
		records = readSteps(b.o.CacheDir)
		records[key] = stepRecord{Steps: u.Count(), Release: release, Seconds: time.Since(start).Seconds(),
			Date: time.Now().UTC().Format("2006-01-02")}
		if data, err := json.MarshalIndent(records, "", "  "); err == nil {
			atomicfile.WriteFile(filepath.Join(b.o.CacheDir, "kernel", stepsFile), append(data, '\n'), 0o644)
		}
	}
	return u.Count(), err
}

// readSteps reads stepsFile; a missing or unreadable file is empty.
func readSteps(cacheDir string) map[string]stepRecord {
	out := map[string]stepRecord{}
	if b, err := os.ReadFile(filepath.Join(cacheDir, "kernel", stepsFile)); err == nil {
		json.Unmarshal(b, &out)
	}
	return out
}
