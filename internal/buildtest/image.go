package buildtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/image"
)

// ExtractImage unpacks the modules image img (VHDX, VHD or raw) with
// our own reader into a new directory and returns it.
func ExtractImage(t testing.TB, img string) string {
	t.Helper()
	d, err := image.OpenDisk(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dest := filepath.Join(t.TempDir(), "x")
	if _, err := image.Extract(context.Background(), d, dest, false); err != nil {
		t.Fatal(err)
	}
	return dest
}
