// Package csource reads kernel C source as text, for the scanners that
// look for symbols, exports and config references without compiling:
// comments blanked out with line numbers kept, identifier bytes, and a
// parallel reader of many files.
package csource

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sync/errgroup"
)

// IsIdentByte reports whether c can be part of a C identifier.
func IsIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Idents calls fn with the bounds of each identifier in b that starts
// with prefix (not empty) at an identifier boundary (b[i:j] is the whole
// identifier), in order, until fn returns false.
func Idents(b []byte, prefix string, fn func(i, j int) bool) {
	if prefix == "" {
		return
	}
	p := []byte(prefix)
	for off := 0; ; {
		i := bytes.Index(b[off:], p)
		if i < 0 {
			return
		}
		i += off
		j := i + len(prefix)
		for j < len(b) && IsIdentByte(b[j]) {
			j++
		}
		off = j
		if i > 0 && IsIdentByte(b[i-1]) {
			continue
		}
		if !fn(i, j) {
			return
		}
	}
}

// StripComments returns a copy of src with C comments replaced by spaces.
// Newlines stay, and so do the backslashes that splice lines (splicing
// comes before comments in C), so line numbers and the extent of #define
// lines are kept. Comment markers inside string and character literals
// are not comments; a literal not closed on its line ends there (an
// apostrophe in assembly text is not a character literal).
func StripComments(src []byte) []byte {
	out := make([]byte, len(src))
	copy(out, src)
	for i := 0; i < len(out); i++ {
		switch c := out[i]; {
		case c == '"' || c == '\'':
			i = SkipLiteral(out, i)
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			i = blankLineComment(out, i)
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			i = blankBlockComment(out, i)
		}
	}
	return out
}

// blankLineComment blanks the // comment at b[i] (going on past a
// splicing backslash) and returns the index of the newline that ends it.
func blankLineComment(b []byte, i int) int {
	for ; i < len(b) && b[i] != '\n'; i++ {
		if b[i] == '\\' && i+1 < len(b) && b[i+1] == '\n' {
			i++ // a continued // comment goes on
			continue
		}
		b[i] = ' '
	}
	return i
}

// blankBlockComment blanks the /* */ comment at b[i] (to the end of b if
// it is not closed) and returns the index of its last byte.
func blankBlockComment(b []byte, i int) int {
	stop := len(b)
	if end := bytes.Index(b[i+2:], []byte("*/")); end >= 0 {
		stop = i + 2 + end + 2
	}
	for j := i; j < stop; j++ {
		if b[j] != '\n' && (b[j] != '\\' || j+1 >= stop || b[j+1] != '\n') {
			b[j] = ' '
		}
	}
	return stop - 1
}

// SkipLiteral returns the index of the closing quote of the literal that
// starts at b[i], or of the end of its line when it is not closed there.
func SkipLiteral(b []byte, i int) int {
	q := b[i]
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case q, '\n':
			return j
		}
	}
	return len(b) - 1
}

// ReadFiles reads the files rels (slash-separated, relative to root) with
// jobs readers in parallel (0: the number of CPUs) and calls fn with each
// one's content; fn must be safe for concurrent use. The first read error
// (an *fs.PathError naming the file) or ctx's error stops it.
func ReadFiles(ctx context.Context, root string, rels []string, jobs int, fn func(rel string, data []byte)) error {
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	g, ctx := errgroup.WithContext(ctx)
	next := make(chan string)
	g.Go(func() error {
		defer close(next)
		for _, r := range rels {
			select {
			case next <- r:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range jobs {
		g.Go(func() error {
			for rel := range next {
				data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
				if err != nil {
					return err
				}
				fn(rel, data)
			}
			return nil
		})
	}
	return g.Wait()
}
