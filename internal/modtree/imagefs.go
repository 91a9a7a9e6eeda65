package modtree

import (
	"io"
	"io/fs"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
)

// openImageFS opens a disk image's ext4 filesystem in place, as a file
// system that never follows symlinks.
func openImageFS(src string) (fs.FS, string, io.Closer, error) {
	f, err := image.OpenFS(src)
	if err != nil {
		return nil, "", nil, err
	}
	return f, f.Format, f, nil
}
