// Package wslmsi takes Microsoft's kernel and modules image out of a WSL
// installer (wsl.<version>.0.<arch>.msi of a microsoft/WSL release): it
// downloads the MSI of an architecture (streamed, atomically, size and
// sha256 digest checked), finds tools\kernel and tools\modules.vhd (or
// tools\artifacts.vhd, the name of builds with the nested layout) through
// the MSI's File, Component and Directory tables, and extracts those two
// files and nothing else from the embedded cabinet (LZX or MSZIP) into a
// cache entry keyed by the MSI's sha256:
//
//	<cache>/wsl-msi/<sha256>/kernel
//	<cache>/wsl-msi/<sha256>/modules.vhd | artifacts.vhd
//	<cache>/wsl-msi/<sha256>/meta.json
//
// The extraction uses two well-kept tools: msiinfo (msitools, libmsi) to
// read the tables and the cabinet stream, and 7-Zip to decompress one
// cabinet member at a time to its standard output. Neither writes a file
// named by the MSI: names from the tables are only compared, every File
// and Directory name of the MSI is checked first (an MSI holding a name
// with "..", a path separator, a drive or a control character is refused
// whole), cabinet members are asked for by their File key, a plain
// identifier, and the two outputs have fixed names. Each file's size is
// checked against the File table and, where the MSI has one, its MD5
// against MsiFileHash. The child processes get an environment without CI
// secrets (internal/safeenv). Entries are built in a temporary directory
// and renamed into place, so an entry that exists is complete.
package wslmsi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/fetch"
	"github.com/wsl-modules/wsl-modules-action/internal/githubapi"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
)

// Modules image names in the tools folder.
const (
	ModulesVHD   = "modules.vhd"
	ArtifactsVHD = "artifacts.vhd"
	// KernelName is the kernel image's name in the tools folder.
	KernelName = "kernel"
)

// CacheSubdir is the directory under the cache directory that holds the
// entries.
const CacheSubdir = "wsl-msi"

// Stock is Microsoft's kernel and modules image from one WSL installer.
type Stock struct {
	// Kernel and Modules are the paths of the extracted files in the
	// cache entry; ModulesName is modules.vhd or artifacts.vhd.
	Kernel, Modules string
	ModulesName     string
	// KernelSHA256 and ModulesSHA256 are the files' sha256 in hex.
	KernelSHA256, ModulesSHA256 string
	// MSIName is the installer's file or asset name, MSISHA256 its sha256.
	MSIName, MSISHA256 string
	// WSLVersion is the WSL release the MSI belongs to ("" for Open).
	WSLVersion string
	// ProductVersion is the MSI's ProductVersion property (2.6.1.0).
	ProductVersion string
	// Compression is the cabinet's method as 7-Zip reports it
	// (LZX:21, MSZip, None).
	Compression string
	// URL is the asset's download link (Fetch only).
	URL string
	// Dir is the cache entry.
	Dir string
}

// cfbMagic starts every compound file (and so every MSI).
var cfbMagic = []byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}

// Open returns the kernel and modules image of the WSL installer at
// msiPath, from the cache entry of its sha256 or extracted into it.
// cacheDir is the cache root (entries go to cacheDir/wsl-msi/).
func Open(ctx context.Context, msiPath, cacheDir string, log *progress.Reporter) (*Stock, error) {
	sum, err := fileSHA256(msiPath)
	if err != nil {
		return nil, fmt.Errorf("wslmsi: %w", err)
	}
	st, err := openKnown(ctx, msiPath, sum, cacheDir, log)
	if err != nil {
		return nil, fmt.Errorf("wslmsi: %w", err)
	}
	return st, nil
}

// fileSHA256 hashes a file after checking that it is a compound file.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, len(cfbMagic))
	if n, _ := io.ReadFull(f, head); n < len(head) || !bytes.Equal(head, cfbMagic) {
		return "", fmt.Errorf("%s is not an MSI (no compound file signature; %d bytes read)", path, n)
	}
	h := sha256.New()
	h.Write(head)
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// openKnown opens the MSI whose sha256 is known.
func openKnown(ctx context.Context, msiPath, sum, cacheDir string, log *progress.Reporter) (*Stock, error) {
	if cacheDir == "" {
		return nil, errors.New("no cache directory")
	}
	entry := filepath.Join(cacheDir, CacheSubdir, sum)
	st, err := readEntry(entry, sum)
	if err == nil {
		log.Printf("wslmsi: %s: kernel and %s from the cache (%s)", filepath.Base(msiPath), st.ModulesName, entry)
		st.MSIName = filepath.Base(msiPath)
		return st, nil
	}
	replace := !errors.Is(err, os.ErrNotExist)
	if replace {
		log.Printf("warning: wslmsi: cache entry %s: %v; extracting again", entry, err)
	}
	done := log.Step("extracting the kernel and modules image from %s", filepath.Base(msiPath))
	defer done()
	if err := os.MkdirAll(filepath.Dir(entry), 0o755); err != nil {
		return nil, err
	}
	if err := extract(ctx, msiPath, sum, entry, replace, log); err != nil {
		return nil, err
	}
	if st, err = readEntry(entry, sum); err != nil {
		return nil, fmt.Errorf("cache entry %s: %w", entry, err)
	}
	st.MSIName = filepath.Base(msiPath)
	return st, nil
}

// Fetch returns the kernel and modules image of WSL release rel for arch
// (x86_64 or arm64): from the cache when the asset's digest names an
// entry (no request), else the MSI is downloaded into workDir (kept for a
// re-run; one already there with the right size and digest is reused) and
// extracted into the cache. An MSI that cannot be extracted is removed
// from workDir.
func Fetch(ctx context.Context, c *githubapi.Client, rel fetch.WSLRelease, arch, workDir, cacheDir string, log *progress.Reporter) (*Stock, error) {
	a, err := rel.MSIFor(arch)
	if err != nil {
		return nil, fmt.Errorf("wslmsi: %w", err)
	}
	if !safeAssetName(a.Name) {
		return nil, fmt.Errorf("wslmsi: WSL %s: asset name %q is not a plain file name", rel.Version, a.Name)
	}
	if _, err := findTools(); err != nil { // before downloading hundreds of MB
		return nil, fmt.Errorf("wslmsi: %w", err)
	}
	label := func(st *Stock) *Stock {
		st.MSIName, st.WSLVersion, st.URL = a.Name, rel.Version, a.BrowserURL
		return st
	}
	if a.Digest != "" && cacheDir != "" {
		if st, err := readEntry(filepath.Join(cacheDir, CacheSubdir, a.Digest), a.Digest); err == nil {
			log.Printf("wslmsi: WSL %s: %s already extracted (sha256 %s); not downloading", rel.Version, a.Name, a.Digest)
			return label(st), nil
		}
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("wslmsi: WSL %s: %w", rel.Version, err)
	}
	dst := filepath.Join(workDir, a.Name)
	sum, ok := reusable(dst, a)
	if ok {
		log.Printf("wslmsi: WSL %s: reusing %s (size and digest match)", rel.Version, dst)
	} else if sum, err = download(ctx, c, a, dst, log); err != nil {
		return nil, fmt.Errorf("wslmsi: WSL %s: %w", rel.Version, err)
	}
	st, err := openKnown(ctx, dst, sum, cacheDir, log)
	if err != nil {
		// The download is complete but unusable: keep nothing of it.
		os.Remove(dst)
		return nil, fmt.Errorf("wslmsi: WSL %s: %w", rel.Version, err)
	}
	return label(st), nil
}

// reusable reports whether dst already holds the asset (same size, and
// the same sha256 when the digest is known), returning its sha256.
func reusable(dst string, a fetch.WSLAsset) (string, bool) {
	st, err := os.Stat(dst)
	if err != nil || !st.Mode().IsRegular() || st.Size() != a.Size || a.Digest == "" {
		return "", false
	}
	sum, err := fileSHA256(dst)
	return sum, err == nil && sum == a.Digest
}

// safeAssetName reports whether name can be used as a file name in the
// work directory.
func safeAssetName(name string) bool {
	return name != "" && name != "." && name != ".." && filepath.Base(name) == name && validName(name) == nil
}
