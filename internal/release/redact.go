package release

import (
	"errors"
	"io"
	"strings"
)

// redactChunk is how much redactCopy reads at a time.
const redactChunk = 32 << 10

// redactCopy copies src to dst with every occurrence of each non-empty
// secret replaced by "***", and returns the bytes written. It is a
// function over the whole stream, not a writer, so an occurrence split
// across any read or write boundary is still found: the last
// len(longest secret)-1 bytes of each chunk are held back until the next
// one (or the end) decides them. Where secrets overlap, the earliest
// occurrence wins, and of those starting at the same byte the longest.
func redactCopy(dst io.Writer, src io.Reader, secrets []string) (int64, error) {
	secrets = nonEmpty(secrets)
	maxLen := 0
	for _, s := range secrets {
		maxLen = max(maxLen, len(s))
	}
	if maxLen == 0 {
		return io.Copy(dst, src)
	}
	var written int64
	emit := func(b string) error {
		n, err := io.WriteString(dst, b)
		written += int64(n)
		return err
	}
	buf := make([]byte, 0, redactChunk+maxLen)
	chunk := make([]byte, redactChunk)
	for eof := false; !eof; {
		n, err := io.ReadFull(src, chunk)
		buf = append(buf, chunk[:n]...)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			eof = true
		} else if err != nil {
			return written, err
		}
		// Bytes before limit are decided: every secret starting there
		// fits in buf.
		limit := len(buf)
		if !eof {
			limit = max(len(buf)-maxLen+1, 0)
		}
		pos := 0
		s := string(buf)
		for pos < limit {
			at, l := firstSecret(s[pos:], secrets)
			if at < 0 || pos+at >= limit {
				break
			}
			if err := emit(s[pos:pos+at] + "***"); err != nil {
				return written, err
			}
			pos += at + l
		}
		if pos < limit {
			if err := emit(s[pos:limit]); err != nil {
				return written, err
			}
			pos = limit
		}
		buf = append(buf[:0], buf[pos:]...)
	}
	return written, nil
}

// firstSecret returns where the earliest secret in s starts and its
// length (the longest of those starting there); -1 if none occurs.
func firstSecret(s string, secrets []string) (at, length int) {
	at = -1
	for _, x := range secrets {
		i := strings.Index(s, x)
		if i >= 0 && (at < 0 || i < at || i == at && len(x) > length) {
			at, length = i, len(x)
		}
	}
	return at, length
}

func nonEmpty(list []string) []string {
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
