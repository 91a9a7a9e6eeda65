package githubapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// ErrStalled is wrapped by the error of a request or response body that
// made no progress for Options.StallTimeout.
var ErrStalled = errors.New("connection stalled")

// Default network timeouts (see Options).
const (
	DefaultConnectTimeout        = 30 * time.Second
	DefaultTLSHandshakeTimeout   = 30 * time.Second
	DefaultResponseHeaderTimeout = 2 * time.Minute
	DefaultStallTimeout          = 2 * time.Minute
)

// HTTPClient returns a plain HTTP client for downloads from any host
// (url module sources): the timeouts and stall detection of New and its
// retries of idempotent requests, but no token and no rate-limit
// handling.
func HTTPClient(o Options) *http.Client {
	return &http.Client{Transport: newTransport(o, "")}
}

// baseTransport returns the transport under the retry logic: o.Base or a
// clone of http.DefaultTransport with connect, TLS handshake and
// response header timeouts, wrapped in the stall detection.
func baseTransport(o Options) http.RoundTripper {
	base := o.Base
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: orDefault(o.ConnectTimeout, DefaultConnectTimeout), KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = orDefault(o.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
		t.ResponseHeaderTimeout = orDefault(o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
		base = t
	}
	return &stallTransport{base: base, idle: orDefault(o.StallTimeout, DefaultStallTimeout)}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// stallTransport fails a request whose body stops being sent, and a
// response body read that waits longer than idle for data. The wait is
// measured per read, so a large download that keeps arriving (however
// slowly, and however long it takes in all) is not affected.
type stallTransport struct {
	base http.RoundTripper
	idle time.Duration
}

// RoundTrip implements http.RoundTripper.
func (s *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	what := req.Method + " " + req.URL.Host + req.URL.Path // no query: it may be a signed URL
	r := req.Clone(ctx)
	var send *watchdog
	if req.Body != nil && req.Body != http.NoBody {
		send = newWatchdog(s.idle, cancel, what+": sending the request body")
		r.Body = &sendBody{ReadCloser: req.Body, w: send}
		send.arm()
	}
	resp, err := s.base.RoundTrip(r)
	if send != nil {
		send.stop()
	}
	if err != nil {
		cancel()
		if send != nil && send.fired.Load() {
			return nil, send.err()
		}
		return nil, err
	}
	resp.Body = &stallBody{rc: resp.Body, w: newWatchdog(s.idle, cancel, what+": reading the response"), cancel: cancel}
	return resp, nil
}

// watchdog cancels a request when it is armed for longer than idle.
type watchdog struct {
	idle   time.Duration
	what   string
	cancel context.CancelFunc
	t      *time.Timer
	fired  atomic.Bool
}

func newWatchdog(idle time.Duration, cancel context.CancelFunc, what string) *watchdog {
	w := &watchdog{idle: idle, what: what, cancel: cancel}
	w.t = time.AfterFunc(time.Hour, func() {
		w.fired.Store(true)
		w.cancel()
	})
	w.t.Stop()
	return w
}

func (w *watchdog) arm()  { w.t.Reset(w.idle) }
func (w *watchdog) stop() { w.t.Stop() }

func (w *watchdog) err() error {
	return fmt.Errorf("githubapi: %s: no data for %s: %w", w.what, w.idle, ErrStalled)
}

// sendBody re-arms the watchdog each time the transport reads more of
// the request body to send; a peer that stops reading stops that.
type sendBody struct {
	io.ReadCloser
	w *watchdog
}

func (b *sendBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.w.stop()
	} else {
		b.w.arm()
	}
	return n, err
}

// stallBody arms the watchdog for the time each read waits.
type stallBody struct {
	rc     io.ReadCloser
	w      *watchdog
	cancel context.CancelFunc
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.w.fired.Load() {
		return 0, b.w.err()
	}
	b.w.arm()
	n, err := b.rc.Read(p)
	b.w.stop()
	if err != nil && err != io.EOF && b.w.fired.Load() {
		return n, b.w.err()
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.w.stop()
	err := b.rc.Close()
	b.cancel()
	return err
}
