package githubfake

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// KernelTopDir is the top-level directory of GitHub's tarball of a
// microsoft/WSL2-Linux-Kernel tag (WSL.md §8).
func KernelTopDir(tag string) string { return "WSL2-Linux-Kernel-" + tag }

// KernelTarball returns the path of a .tar.gz shaped like GitHub's tarball
// of the kernel tag: Debian's linux-source-6.12 tarball
// (testenv.KernelSourceTarball) repacked with the top-level directory
// WSL2-Linux-Kernel-<tag>/, plus the extra files (paths relative to the top
// directory, e.g. "Microsoft/config-wsl"). The result is cached under
// testenv.CacheDir(), keyed by the source file's name, size and mtime, the
// tag and the extra files, and made under a file lock; repacking takes
// about a minute.
func KernelTarball(t testing.TB, tag string, extra map[string][]byte) string {
	t.Helper()
	src := testenv.KernelSourceTarball(t)
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s\x00", filepath.Base(src), st.Size(), st.ModTime().UnixNano(), tag)
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		s := sha256.Sum256(extra[name])
		fmt.Fprintf(h, "%s\x00%x\x00", name, s)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(testenv.CacheDir(), "githubfake")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		testenv.Missing(t, "writable cache dir %s: %v", dir, err)
	}
	dst := filepath.Join(dir, "kernel-"+tag+"-"+key+".tar.gz")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	// Test packages running at once repack it once.
	unlock := testenv.Lock(t, dst+".lock")
	defer unlock()
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	t.Logf("githubfake: repacking %s as %s (cached for later runs)", src, dst)
	if err := RepackKernelTarball(context.Background(), src, dst, tag, extra); err != nil {
		t.Fatalf("githubfake: %v", err)
	}
	return dst
}

// RepackKernelTarball writes dst (atomically) as a gzip tarball whose
// entries are those of the (xz, gzip or plain) tarball src with the first
// path component replaced by KernelTopDir(tag), preceded by a pax global
// header carrying a commit id as `git archive` writes it, and followed by
// the extra files. Source entries with the same path as an extra file are
// dropped. xz input is decompressed by the xz command, which is much faster
// than a pure Go decoder.
func RepackKernelTarball(ctx context.Context, src, dst, tag string, extra map[string][]byte) error {
	in, wait, cleanup, err := openTarball(ctx, src)
	if err != nil {
		return err
	}
	defer cleanup()
	out, err := atomicfile.Create(dst, true)
	if err != nil {
		return err
	}
	defer out.Abort()
	zw, err := gzip.NewWriterLevel(out, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	top := KernelTopDir(tag)
	tw := tar.NewWriter(zw)
	commit := sha256.Sum256([]byte(tag))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header",
		PAXRecords: map[string]string{"comment": hex.EncodeToString(commit[:20])}}); err != nil {
		return err
	}
	if err := copyRetopped(tw, tar.NewReader(in), src, top, extra); err != nil {
		return err
	}
	if err := writeExtraFiles(tw, top, extra); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := wait(); err != nil {
		return fmt.Errorf("repack %s: %w", src, err)
	}
	return out.Commit(0o644)
}

// openTarball opens the tarball src (xz-compressed if it ends in .xz,
// else gzip) for reading decompressed; wait reports the xz command's
// failure once in is read, and cleanup releases the file or command.
func openTarball(ctx context.Context, src string) (in io.Reader, wait func() error, cleanup func(), err error) {
	if strings.HasSuffix(src, ".xz") {
		cmd := exec.CommandContext(ctx, "xz", "-dc", "-T0", src)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, nil, nil, fmt.Errorf("repack %s: %w", src, err)
		}
		return out, cmd.Wait, func() { cmd.Process.Kill() }, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("repack: %w", err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("repack %s: %w", src, err)
	}
	return zr, func() error { return nil }, func() { f.Close() }, nil
}

// copyRetopped copies the entries of tr (read from src) to tw with the
// first path component (of names and hard link targets) replaced by top,
// dropping pax global headers and the entries extra replaces.
func copyRetopped(tw *tar.Writer, tr *tar.Reader, src, top string, extra map[string][]byte) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("repack %s: %w", src, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		_, rest, _ := strings.Cut(strings.TrimPrefix(h.Name, "./"), "/")
		if _, dup := extra[strings.TrimSuffix(rest, "/")]; dup {
			continue
		}
		h.Name = top + "/" + rest
		if h.Typeflag == tar.TypeLink {
			_, lrest, _ := strings.Cut(strings.TrimPrefix(h.Linkname, "./"), "/")
			h.Linkname = top + "/" + lrest
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("repack %s: %s: %w", src, h.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("repack %s: %s: %w", src, h.Name, err)
		}
	}
}

// writeExtraFiles writes the extra files under top, in name order.
func writeExtraFiles(tw *tar.Writer, top string, extra map[string][]byte) error {
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		b := extra[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: top + "/" + name, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return nil
}
