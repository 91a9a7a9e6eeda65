package image

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// The benchmarks compare reading every file of the Debian module tree
// image in place (what the module-tree hub does) with extracting it:
//
//	go test ./internal/image -run XXX -bench 'ReadAll|Extract' -benchtime 5x

var (
	benchOnce sync.Once
	benchImg  string
	benchDir  string
)

// TestMain removes the benchmarks' image after all tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// debianImage builds the Debian tree's image once per test binary.
func debianImage(b *testing.B) string {
	root, rel := testenv.DebianModules(b)
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "image-bench-*")
		if err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		res, err := Build(context.Background(), Options{ModuleDir: filepath.Join(root, "lib", "modules", rel), Release: rel, Slack: DefaultSlack, SourceDateEpoch: sde}, filepath.Join(dir, "debian.vhdx"), nil)
		if err != nil {
			b.Fatal(err)
		}
		benchImg = res.Path
	})
	if benchImg == "" {
		b.Fatal("no image")
	}
	return benchImg
}

// readAllFiles lists the regular files, then reads each with ReadFile on
// workers goroutines; it returns the bytes read.
func readAllFiles(b *testing.B, fsys *FS, workers int) int64 {
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var total int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var n int64
			for i := w; i < len(files); i += workers {
				data, err := fsys.ReadFile(files[i])
				if err != nil {
					b.Error(err)
					return
				}
				n += int64(len(data))
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	return total
}

func benchReadAll(b *testing.B, workers int) {
	img := debianImage(b)
	b.ResetTimer()
	for b.Loop() {
		fsys, err := OpenFS(img)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(readAllFiles(b, fsys, workers))
		fsys.Close()
	}
}

// BenchmarkReadAllFS opens the image and reads every file through the FS.
func BenchmarkReadAllFS(b *testing.B) { benchReadAll(b, 1) }

// BenchmarkReadAllFSParallel does the same on GOMAXPROCS goroutines.
func BenchmarkReadAllFSParallel(b *testing.B) { benchReadAll(b, runtime.GOMAXPROCS(0)) }

// BenchmarkExtract extracts the image into a new directory.
func BenchmarkExtract(b *testing.B) {
	img := debianImage(b)
	d, err := OpenDisk(img)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.ResetTimer()
	for b.Loop() {
		dest := filepath.Join(b.TempDir(), "x")
		if _, err := Extract(context.Background(), d, dest, false); err != nil {
			b.Fatal(err)
		}
	}
}
