package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/digest"
)

// WriteFile writes content to the file p (mode 0644), making its parent
// directories.
func WriteFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// WriteFileMode writes data to the file p with exactly mode (chmod'ed, so
// neither the umask nor an existing file's mode interferes), making its
// parent directories.
func WriteFileMode(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// WriteFiles writes files (slash-separated path under dir → content),
// making directories as needed; names ending in .sh get mode 0755, the
// others 0644.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// TreeDigest returns digest.Tree of dir: a hash of its paths, modes,
// contents and link targets.
func TreeDigest(t testing.TB, dir string) string {
	t.Helper()
	d, err := digest.Tree(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// SHA256File returns the hex SHA-256 of the file p.
func SHA256File(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ImageSize estimates the bytes a filesystem image of dir needs: the size
// of everything in it plus 4 KiB per entry.
func ImageSize(dir string) int64 {
	var size int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			size += fi.Size() + 4096
		}
		return nil
	})
	return size
}
