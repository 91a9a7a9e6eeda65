package progress

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clock is a fake clock advanced by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }
func lines(b *bytes.Buffer) []string {
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}
func reporter(c *clock) (*Reporter, *bytes.Buffer) {
	var b bytes.Buffer
	return &Reporter{W: &b, Now: c.now, Interval: time.Second}, &b
}

func TestStep(t *testing.T) {
	c := newClock()
	r, b := reporter(c)
	done := r.Step("building %s", "kernel")
	if got := b.String(); got != "==> building kernel\n" {
		t.Fatalf("start line %q", got)
	}
	c.advance(83*time.Second + 460*time.Millisecond)
	done()
	want := []string{"==> building kernel", "<== building kernel (1m23.5s)"}
	if got := lines(b); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestPrintf(t *testing.T) {
	var b bytes.Buffer
	r := New(&b)
	r.Printf("a %d", 1)
	r.Printf("b")
	if b.String() != "a 1\nb\n" {
		t.Errorf("output %q", b.String())
	}
	// A Reporter without a writer prints nothing and does not fail.
	(&Reporter{}).Printf("x")
	(&Reporter{}).Step("x")()
}

func TestNil(t *testing.T) {
	var r *Reporter
	r.Printf("x %d", 1)
	done := r.Step("x")
	if done == nil {
		t.Fatal("nil Reporter's Step returned a nil func")
	}
	done()
	c := r.Counter("x", 10)
	if c != nil {
		t.Fatalf("nil Reporter's Counter = %v, want nil", c)
	}
	c.Add(5)
	c.Done()
	n, err := c.Writer().Write([]byte("hello"))
	if n != 5 || err != nil {
		t.Errorf("nil Counter's Writer: Write = %d, %v", n, err)
	}
}

func TestCounterWithTotal(t *testing.T) {
	c := newClock()
	r, b := reporter(c)
	ctr := r.Counter("download", 4<<20)
	ctr.Add(1 << 20) // no time passed: nothing printed
	if b.Len() != 0 {
		t.Fatalf("printed before the interval passed: %q", b.String())
	}
	c.advance(2 * time.Second) // 1 MiB in 2 s, 3 MiB left
	ctr.Add(0)
	c.advance(500 * time.Millisecond) // within the interval: silent
	ctr.Add(0)
	c.advance(500 * time.Millisecond) // 3 s: 2 MiB in 3 s, 2 MiB left
	if _, err := ctr.Writer().Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.advance(time.Second) // 4 MiB in 4 s
	ctr.Add(2 << 20)
	c.advance(time.Second)
	ctr.Done()
	// rate = bytes / elapsed, ETA = bytes left / rate:
	// 1 MiB/2 s = 512 KiB/s, 3 MiB left = 6 s; 2 MiB/3 s = 682.7 KiB/s,
	// 2 MiB left = 3 s; 4 MiB/4 s; final 4 MiB/5 s = 819.2 KiB/s.
	want := []string{
		"download: 1.0 MiB of 4.0 MiB (25%), 512.0 KiB/s, ETA 6s",
		"download: 2.0 MiB of 4.0 MiB (50%), 682.7 KiB/s, ETA 3s",
		"download: 4.0 MiB of 4.0 MiB (100%), 1.0 MiB/s, ETA 0s",
		"download: 4.0 MiB in 5.0s (819.2 KiB/s)",
	}
	if got := lines(b); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCounterWithoutTotal(t *testing.T) {
	c := newClock()
	r, b := reporter(c)
	ctr := r.Counter("read", 0)
	c.advance(4 * time.Second)
	ctr.Add(3 << 30)
	ctr.Done()
	want := []string{"read: 3.0 GiB, 768.0 MiB/s", "read: 3.0 GiB in 4.0s (768.0 MiB/s)"}
	if got := lines(b); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("output %q, want %q", got, want)
	}
}

// TestCounterOvershoot: a total that turns out too small must not give a
// negative ETA.
func TestCounterOvershoot(t *testing.T) {
	c := newClock()
	r, b := reporter(c)
	ctr := r.Counter("x", 1000)
	c.advance(time.Second)
	ctr.Add(3000)
	if got := b.String(); strings.Contains(got, "-") {
		t.Errorf("negative ETA or percentage: %q", got)
	}
}

// TestCounterDefaultInterval: with Interval unset, updates come at most
// every 2 seconds.
func TestCounterDefaultInterval(t *testing.T) {
	c := newClock()
	var b bytes.Buffer
	r := &Reporter{W: &b, Now: c.now}
	ctr := r.Counter("x", 0)
	for i := 0; i < 10; i++ {
		c.advance(500 * time.Millisecond)
		ctr.Add(1)
	}
	if n := strings.Count(b.String(), "\n"); n != 2 {
		t.Errorf("%d updates in 5s with the default 2s interval, want 2:\n%s", n, b.String())
	}
}

// TestBytes compares Bytes with coreutils numfmt --to=iec-i.
func TestBytes(t *testing.T) {
	numfmt, err := exec.LookPath("numfmt")
	if err != nil {
		t.Skip("numfmt not installed")
	}
	ns := []int64{0, 1, 1023, 1024, 1025, 1536, 10239, 10240, 1048524, 1048525, 1048575, 1048576, 1572864,
		1<<30 - 1, 5 << 30, 1<<40 + 1<<39, 1 << 50, 1 << 60, 1<<63 - 1}
	args := []string{"--to=iec-i", "--suffix=B", "--format=%.1f", "--round=nearest"}
	for _, n := range ns {
		args = append(args, strconv.FormatInt(n, 10))
	}
	out, err := exec.Command(numfmt, args...).Output()
	if err != nil {
		t.Fatalf("numfmt: %v", err)
	}
	want := strings.Fields(string(out))
	if len(want) != len(ns) {
		t.Fatalf("numfmt printed %q", out)
	}
	for i, n := range ns {
		w := want[i]
		if n < 1024 {
			w = strconv.FormatInt(n, 10) + "B" // numfmt adds ".0" to plain bytes
		}
		if got := strings.ReplaceAll(Bytes(n), " ", ""); got != w {
			t.Errorf("Bytes(%d) = %q, numfmt says %q", n, Bytes(n), w)
		}
	}
}
