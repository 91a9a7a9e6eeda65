package fetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// wslCacheSchema is the format of the WSL release cache file.
const wslCacheSchema = 1

// wslCache is the file WSLOptions.CacheFile names: the releases as last
// listed (newest created first, older ones included so that a later
// listing knows where to stop), the kernels read from packages.config,
// and the first page's ETag for the next conditional request.
type wslCache struct {
	Schema     int             `json:"schema"`
	Repo       string          `json:"repo"`
	MinVersion string          `json:"min_version"`
	ETag       string          `json:"etag,omitempty"`
	Releases   []cachedRelease `json:"releases"`
}

// loadWSLCache reads the cache file. A missing file is no cache; an
// unreadable one, or one for another repository, minimum version or
// format, is ignored with a warning (the next save replaces it).
func loadWSLCache(o WSLOptions) *wslCache {
	if o.CacheFile == "" {
		return nil
	}
	b, err := os.ReadFile(o.CacheFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var c wslCache
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	switch {
	case err != nil:
		o.Log.Printf("warning: WSL release cache %s: %v; listing the releases again", o.CacheFile, err)
		return nil
	case c.Schema != wslCacheSchema || c.Repo != o.Repo || c.MinVersion != o.MinVersion:
		o.Log.Printf("debug: WSL release cache %s is for %s from %s (format %d); listing the releases again",
			o.CacheFile, c.Repo, c.MinVersion, c.Schema)
		return nil
	}
	return &c
}

// saveWSLCache writes the cache file atomically (creating its directory).
func saveWSLCache(o WSLOptions, etag string, rels []cachedRelease) error {
	c := wslCache{Schema: wslCacheSchema, Repo: o.Repo, MinVersion: o.MinVersion, ETag: etag, Releases: rels}
	b, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		return fmt.Errorf("fetch: WSL release cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.CacheFile), 0o755); err != nil {
		return fmt.Errorf("fetch: WSL release cache %s: %w", o.CacheFile, err)
	}
	if err := atomicfile.WriteFile(o.CacheFile, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("fetch: WSL release cache: %w", err)
	}
	return nil
}
