// Package progress reports progress of long-running work on a terminal or
// a CI log: named steps with elapsed time, and byte counters with rate and
// ETA. A nil *Reporter is valid and reports nothing.
package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Reporter writes progress lines to W.
type Reporter struct {
	W io.Writer
	// Interval is the minimum time between two updates of one counter
	// (default 2s).
	Interval time.Duration
	// Now is the clock (default time.Now); tests may replace it.
	Now func() time.Time
	mu  sync.Mutex
}

// New returns a Reporter writing to w.
func New(w io.Writer) *Reporter { return &Reporter{W: w} }

func (r *Reporter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Printf writes one line.
func (r *Reporter) Printf(format string, a ...any) {
	if r == nil || r.W == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.W, format+"\n", a...)
}

// Step announces a step and returns a function that reports its end with
// the elapsed time.
func (r *Reporter) Step(format string, a ...any) (done func()) {
	name := fmt.Sprintf(format, a...)
	if r == nil {
		return func() {}
	}
	start := r.now()
	r.Printf("==> %s", name)
	return func() {
		r.Printf("<== %s (%s)", name, r.now().Sub(start).Round(100*time.Millisecond))
	}
}

// Counter tracks bytes against an optional total (0 if unknown).
type Counter struct {
	r     *Reporter
	label string
	total int64
	n     int64
	start time.Time
	last  time.Time
}

// Counter starts a byte counter labelled label.
func (r *Reporter) Counter(label string, total int64) *Counter {
	if r == nil {
		return nil
	}
	t := r.now()
	return &Counter{r: r, label: label, total: total, start: t, last: t}
}

// Add records n more bytes and reports at most once per interval.
func (c *Counter) Add(n int64) {
	if c == nil {
		return
	}
	c.n += n
	now := c.r.now()
	iv := c.r.Interval
	if iv == 0 {
		iv = 2 * time.Second
	}
	if now.Sub(c.last) >= iv {
		c.last = now
		c.report(now, false)
	}
}

// Done reports the final count.
func (c *Counter) Done() {
	if c == nil {
		return
	}
	c.report(c.r.now(), true)
}

func (c *Counter) report(now time.Time, final bool) {
	el := now.Sub(c.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(c.n) / el
	}
	switch {
	case final:
		c.r.Printf("%s: %s in %.1fs (%s/s)", c.label, Bytes(c.n), el, Bytes(int64(rate)))
	case c.total > 0 && c.n <= c.total && rate > 0:
		eta := time.Duration(float64(c.total-c.n) / rate * float64(time.Second)).Round(time.Second)
		c.r.Printf("%s: %s of %s (%.0f%%), %s/s, ETA %s", c.label, Bytes(c.n), Bytes(c.total),
			100*float64(c.n)/float64(c.total), Bytes(int64(rate)), eta)
	default:
		c.r.Printf("%s: %s, %s/s", c.label, Bytes(c.n), Bytes(int64(rate)))
	}
}

// Writer returns an io.Writer that counts what is written through it.
func (c *Counter) Writer() io.Writer { return counterWriter{c} }

type counterWriter struct{ c *Counter }

func (w counterWriter) Write(p []byte) (int, error) { w.c.Add(int64(len(p))); return len(p), nil }

// Bytes formats a byte count with a binary unit and one decimal, rounding
// to nearest (like numfmt --to=iec-i): 1536 is "1.5 KiB", 1048575 is
// "1.0 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	if v >= unit-0.05 && exp < 5 { // would print as 1024.0 of this unit
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[exp])
}
