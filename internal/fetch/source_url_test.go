package fetch

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// serveBytes serves body at every path and counts the requests.
func serveBytes(t *testing.T, body []byte) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestModuleURLNotUnpackedBeforeVerified serves archives that the
// unpacker would refuse or that would make it work hard, under a pin
// they do not match: the error must be the sha256 mismatch, so they were
// never decompressed or read as tar.
func TestModuleURLNotUnpackedBeforeVerified(t *testing.T) {
	var bomb bytes.Buffer
	tw := tar.NewWriter(&bomb)
	tw.WriteHeader(&tar.Header{Name: "m/zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: 256 << 20})
	tw.Write(make([]byte, 256<<20))
	tw.Close()
	for name, body := range map[string][]byte{
		"traversal": tarGz(t, []entry{{name: "m/../../../etc/cron.d/x", body: "x", typ: tar.TypeReg}}),
		"gzip-bomb": tarGzBytes(t, bomb.Bytes()),
	} {
		t.Run(name, func(t *testing.T) {
			srv, _ := serveBytes(t, body)
			work := t.TempDir()
			bad := strings.Repeat("cd", 32)
			start := time.Now()
			_, err := (&Fetcher{}).Module(context.Background(), ModuleSpec{Name: "m", URL: srv.URL + "/m.tar.gz", SHA256: bad}, filepath.Join(work, "m"))
			if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") || errors.Is(err, archive.ErrUnsafe) {
				t.Fatalf("err = %v, want a sha256 mismatch before any unpacking", err)
			}
			t.Logf("refused in %s: %v", time.Since(start).Round(time.Millisecond), err)
			assertNothingLeft(t, work)
		})
	}
}

// TestModuleURLSizeCap: a download over MaxDownload fails, whether its
// Content-Length says so or not, and leaves nothing.
func TestModuleURLSizeCap(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 2<<20)
	sum := sha256.Sum256(body)
	for name, chunked := range map[string]bool{"content-length": false, "chunked": true} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				}
				for i := 0; i < len(body); i += 64 << 10 {
					w.Write(body[i : i+64<<10])
					w.(http.Flusher).Flush()
				}
			}))
			defer srv.Close()
			work := t.TempDir()
			f := &Fetcher{MaxDownload: 1 << 20}
			_, err := f.Module(context.Background(), ModuleSpec{Name: "m", URL: srv.URL + "/m.tar", SHA256: hex.EncodeToString(sum[:])}, filepath.Join(work, "m"))
			if err == nil || !strings.Contains(err.Error(), "more than the limit of 1048576") {
				t.Fatalf("err = %v, want the size limit", err)
			}
			assertNothingLeft(t, work)
		})
	}
}

// TestModuleURLStalled: a server that sends part of the archive and then
// nothing; the download fails after the stall timeout.
func TestModuleURLStalled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for line, err := br.ReadString('\n'); err == nil && line != "\r\n"; line, err = br.ReadString('\n') {
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("x", 5000))
				time.Sleep(time.Minute)
			}()
		}
	}()
	c, err := githubapi.New(githubapi.Options{Getenv: func(string) string { return "" }, StallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	work := t.TempDir()
	start := time.Now()
	_, err = (&Fetcher{Client: c}).Module(ctx, ModuleSpec{Name: "m", URL: "http://" + ln.Addr().String() + "/m.tar.gz", SHA256: strings.Repeat("ab", 32)}, filepath.Join(work, "m"))
	if !errors.Is(err, githubapi.ErrStalled) || time.Since(start) > 10*time.Second {
		t.Fatalf("after %s: %v, want ErrStalled", time.Since(start), err)
	}
	assertNothingLeft(t, work)
}

// TestModuleGitStalled: a git server that accepts the connection and never
// answers; git gives up after GitLowSpeedTime instead of hanging.
func TestModuleGitStalled(t *testing.T) {
	testenv.Tool(t, "git")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n')
				time.Sleep(time.Minute)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	work := t.TempDir()
	start := time.Now()
	f := &Fetcher{GitLowSpeedTime: 2}
	_, err = f.Module(ctx, ModuleSpec{Name: "m", Git: "http://" + ln.Addr().String() + "/m.git", Ref: "main"}, filepath.Join(work, "m"))
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "too slow") {
		t.Fatalf("after %s: %v, want git's low-speed abort", time.Since(start), err)
	}
	t.Logf("git gave up after %s: %v", time.Since(start).Round(time.Millisecond), err)
	assertNothingLeft(t, work)
}

func tarGzBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(b)
	zw.Close()
	return z.Bytes()
}
