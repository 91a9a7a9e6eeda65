package progress

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"
)

// kbuildStep matches one step of kbuild's quiet output: two spaces, the
// command tag (CC, CC [M], LD, AR, HOSTCC, GEN, ...), spaces, the target.
var kbuildStep = regexp.MustCompile(`^  [A-Z][A-Z0-9_]*( \[M\])? +\S`)

// IsKbuildStep reports whether a log line is one kbuild step (a compile
// unit in the broad sense: compile, link, generate, install).
func IsKbuildStep(line []byte) bool { return kbuildStep.Match(line) }

// Units counts the kbuild steps of a make's output written through
// Writer, and reports the count and the rate at most once per Interval,
// with a percentage and an ETA when the total is known. Safe for
// concurrent writes.
type Units struct {
	r         *Reporter
	label     string
	total     int64
	totalFrom string
	interval  time.Duration

	mu    sync.Mutex
	n     int64
	start time.Time
	last  time.Time
	part  []byte
}

// Units starts a kbuild step counter. total is the expected number of
// steps (0: unknown) and totalFrom says where it comes from ("the previous
// build of this config", ...). interval is the time between two reports
// (0: one minute, which keeps CI logs readable).
func (r *Reporter) Units(label string, total int64, totalFrom string, interval time.Duration) *Units {
	if interval <= 0 {
		interval = time.Minute
	}
	var t time.Time
	if r != nil {
		t = r.now()
	}
	return &Units{r: r, label: label, total: total, totalFrom: totalFrom, interval: interval, start: t, last: t}
}

// Writer returns a writer that counts the steps of the output given to it
// and passes nothing on.
func (u *Units) Writer() io.Writer { return unitsWriter{u} }

type unitsWriter struct{ u *Units }

func (w unitsWriter) Write(p []byte) (int, error) {
	w.u.add(p)
	return len(p), nil
}

func (u *Units) add(p []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.part = append(u.part, p...)
	for {
		i := bytes.IndexByte(u.part, '\n')
		if i < 0 {
			break
		}
		if IsKbuildStep(u.part[:i]) {
			u.n++
		}
		u.part = u.part[i+1:]
	}
	if len(u.part) > 64<<10 {
		u.part = u.part[:0] // a line that long is not a kbuild step
	}
	if u.r == nil {
		return
	}
	if now := u.r.now(); now.Sub(u.last) >= u.interval {
		u.last = now
		u.r.Printf("%s", u.line(now))
	}
}

// Count returns the steps counted so far.
func (u *Units) Count() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

// Done reports the final count, and the expected total when there was
// one.
func (u *Units) Done() {
	if u.r == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.r.now()
	expected := ""
	if u.total > 0 {
		expected = fmt.Sprintf("; %d expected from %s", u.total, u.totalFrom)
	}
	u.r.Printf("%s: %d steps in %s (%.1f/s%s)", u.label, u.n, now.Sub(u.start).Round(time.Second), u.rate(now), expected)
}

func (u *Units) rate(now time.Time) float64 {
	if el := now.Sub(u.start).Seconds(); el > 0 {
		return float64(u.n) / el
	}
	return 0
}

func (u *Units) line(now time.Time) string {
	rate := u.rate(now)
	el := now.Sub(u.start).Round(time.Second)
	if u.total > 0 && u.n <= u.total && rate > 0 {
		eta := time.Duration(float64(u.total-u.n) / rate * float64(time.Second)).Round(time.Second)
		return fmt.Sprintf("%s: %d of %d steps (%.0f%%; total from %s), %.1f/s, %s elapsed, ETA %s",
			u.label, u.n, u.total, 100*float64(u.n)/float64(u.total), u.totalFrom, rate, el, eta)
	}
	from := ""
	if u.totalFrom != "" {
		from = "; " + u.totalFrom
	}
	return fmt.Sprintf("%s: %d steps, %.1f/s, %s elapsed (total unknown%s)", u.label, u.n, rate, el, from)
}
