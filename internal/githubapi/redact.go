package githubapi

import (
	"bytes"
	"io"
	"sync"
)

// NewRedactor returns a writer that replaces each non-empty secret with
// "***" in what is written through it, also when a secret is split
// across writes (io.Copy of a log writes 32 KiB chunks, which can end in
// the middle of a token): the end of a write that could be the start of a
// secret is held back until the next write shows whether it is one, so
// nothing is held after a write that ends a line. With secrets, the
// writer is a *Redactor; call its Flush once nothing more will be written.
// Without any, it is w itself.
func NewRedactor(w io.Writer, secrets ...string) io.Writer {
	var s [][]byte
	for _, x := range secrets {
		if x != "" {
			s = append(s, []byte(x))
		}
	}
	if len(s) == 0 {
		return w
	}
	return &Redactor{w: w, secrets: s}
}

// Redactor is the writer NewRedactor returns when there are secrets. It
// is safe for concurrent use.
type Redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte
	held    []byte
}

// Write redacts p, with what the previous write held back in front of it,
// and writes all of it but a tail that may be the start of a secret.
func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	buf := append(r.held, p...)
	for _, x := range r.secrets {
		buf = bytes.ReplaceAll(buf, x, []byte("***"))
	}
	keep := 0
	for _, x := range r.secrets {
		keep = max(keep, prefixAtEnd(buf, x))
	}
	out := buf[:len(buf)-keep]
	r.held = append([]byte(nil), buf[len(buf)-keep:]...)
	if len(out) > 0 {
		if _, err := r.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what is held back (the start of a secret that was never
// completed is no secret).
func (r *Redactor) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.held) == 0 {
		return nil
	}
	_, err := r.w.Write(r.held)
	r.held = nil
	return err
}

// prefixAtEnd returns the length of the longest proper prefix of secret
// that b ends with.
func prefixAtEnd(b, secret []byte) int {
	for k := min(len(secret)-1, len(b)); k > 0; k-- {
		if bytes.HasSuffix(b, secret[:k]) {
			return k
		}
	}
	return 0
}
