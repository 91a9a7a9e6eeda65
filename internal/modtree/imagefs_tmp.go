package modtree

// TEMPORARY until image.OpenFS lands: opens an image by extracting it.

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
)

type rmdir string

func (d rmdir) Close() error { return os.RemoveAll(string(d)) }

func openImageFS(src string) (fs.FS, string, io.Closer, error) {
	d, err := image.OpenDisk(src)
	if err != nil {
		return nil, "", nil, err
	}
	defer d.Close()
	tmp, err := os.MkdirTemp("", ".modtree-image-*")
	if err != nil {
		return nil, "", nil, err
	}
	if _, err := image.Extract(context.Background(), d, filepath.Join(tmp, "x"), false); err != nil {
		os.RemoveAll(tmp)
		return nil, "", nil, err
	}
	return os.DirFS(filepath.Join(tmp, "x")), d.Format, rmdir(tmp), nil
}
