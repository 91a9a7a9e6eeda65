package modbuild

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modlist"
)

// LocalFetcher is a SourceFetcher for url modules whose URL is a local
// file:// tarball (useful offline and in tests): it checks the sha256 and
// unpacks the tarball with internal/archive, stripping its single top
// directory. Other sources are refused; internal/fetch handles them.
func LocalFetcher(ctx context.Context, m modlist.Module, dest string) (manifest.Source, error) {
	if m.Kind() != modlist.KindURL {
		return manifest.Source{}, fmt.Errorf("module %s: %s sources are not supported offline", m.Name, m.Kind())
	}
	u, err := url.Parse(m.URL)
	if err != nil || u.Scheme != "file" {
		return manifest.Source{}, fmt.Errorf("module %s: url %q: only file:// URLs are supported offline", m.Name, m.URL)
	}
	p := filepath.FromSlash(u.Path)
	sum, err := digest.File(p)
	if err != nil {
		return manifest.Source{}, fmt.Errorf("module %s: %w", m.Name, err)
	}
	if sum != m.SHA256 {
		return manifest.Source{}, fmt.Errorf("module %s: %s: sha256 mismatch: the file has %s, the list (modules[%s].sha256) says %s", m.Name, m.URL, sum, m.Name, m.SHA256)
	}
	if _, err := archive.ExtractFile(ctx, p, dest, archive.Options{StripComponents: 1, Name: m.URL}); err != nil {
		return manifest.Source{}, fmt.Errorf("module %s: %w", m.Name, err)
	}
	return manifest.Source{Kind: "url", URL: m.URL, SHA256: sum}, nil
}
