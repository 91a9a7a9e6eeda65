package githubapi_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
)

// stallServer is a TCP server on the loopback that hands each accepted
// connection to serve and closes everything when the test ends.
func stallServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// readRequest reads a request's header lines.
func readRequest(c net.Conn) *bufio.Reader {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return br
		}
	}
}

// quick are short timeouts, so a test sees them fire within seconds.
var quick = githubapi.Options{ConnectTimeout: time.Second, TLSHandshakeTimeout: 300 * time.Millisecond,
	ResponseHeaderTimeout: 300 * time.Millisecond, StallTimeout: 300 * time.Millisecond, MaxAttempts: 1}

// guard bounds a test that would hang without the timeouts.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func get(ctx context.Context, t *testing.T, hc *http.Client, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return hc.Do(req)
}

// TestTimeoutNoResponseHeaders: a server that reads the request and never
// answers.
func TestTimeoutNoResponseHeaders(t *testing.T) {
	addr := stallServer(t, func(c net.Conn) { readRequest(c); select {} })
	start := time.Now()
	_, err := get(guard(t), t, githubapi.HTTPClient(quick), "http://"+addr+"/x")
	if err == nil || !strings.Contains(err.Error(), "timeout awaiting response headers") || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v, want a response header timeout", time.Since(start), err)
	}
}

// TestTimeoutTLSHandshake: a server that accepts and never speaks TLS.
func TestTimeoutTLSHandshake(t *testing.T) {
	addr := stallServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	start := time.Now()
	_, err := get(guard(t), t, githubapi.HTTPClient(quick), "https://"+addr+"/x")
	if err == nil || !strings.Contains(err.Error(), "TLS handshake timeout") || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v, want a TLS handshake timeout", time.Since(start), err)
	}
}

// TestStalledBody: headers and part of the body, then nothing. Through
// New's client, as fetch uses it for tarballs and url sources.
func TestStalledBody(t *testing.T) {
	addr := stallServer(t, func(c net.Conn) {
		readRequest(c)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n%s", strings.Repeat("x", 1000))
		select {}
	})
	o := quick
	o.Getenv = func(string) string { return "" }
	c, err := githubapi.New(o)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := get(guard(t), t, c.HTTP, "http://"+addr+"/big.tar.gz?X-Amz-Signature=secret")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, resp.Body)
	if !errors.Is(err, githubapi.ErrStalled) || n != 1000 || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s and %d bytes: %v, want ErrStalled", time.Since(start), n, err)
	}
	if strings.Contains(err.Error(), "Signature") {
		t.Errorf("error shows the query: %v", err)
	}
}

// TestSlowDownloadCompletes: a body that takes ten times the stall
// timeout but never pauses that long is read to the end.
func TestSlowDownloadCompletes(t *testing.T) {
	const chunks, size = 30, 64 << 10
	addr := stallServer(t, func(c net.Conn) {
		readRequest(c)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", chunks*size)
		for i := 0; i < chunks; i++ {
			time.Sleep(100 * time.Millisecond)
			if _, err := c.Write(make([]byte, size)); err != nil {
				return
			}
		}
	})
	start := time.Now()
	resp, err := get(guard(t), t, githubapi.HTTPClient(quick), "http://"+addr+"/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != chunks*size {
		t.Fatalf("slow download: %d bytes, %v", n, err)
	}
	if d := time.Since(start); d < 10*quick.StallTimeout {
		t.Fatalf("download took %s, want a test longer than the stall timeout", d)
	}
}

// TestStalledUpload: a server that stops reading a large request body.
func TestStalledUpload(t *testing.T) {
	addr := stallServer(t, func(c net.Conn) { readRequest(c); select {} })
	body := io.LimitReader(zeros{}, 1<<30)
	req, err := http.NewRequestWithContext(guard(t), http.MethodPost, "http://"+addr+"/upload", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1 << 30
	start := time.Now()
	_, err = githubapi.HTTPClient(quick).Do(req)
	if !errors.Is(err, githubapi.ErrStalled) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v, want ErrStalled", time.Since(start), err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
