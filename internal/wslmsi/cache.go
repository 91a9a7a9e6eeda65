package wslmsi

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
)

// metaFile and metaSchema name and version a cache entry's record.
const (
	metaFile   = "meta.json"
	metaSchema = 1
)

// meta is a cache entry's meta.json.
type meta struct {
	Schema         int    `json:"schema"`
	MSISHA256      string `json:"msi_sha256"`
	MSISize        int64  `json:"msi_size"`
	MSIName        string `json:"msi_name"`
	ProductVersion string `json:"product_version,omitempty"`
	// Compression is the cabinet's method (7-Zip's name: LZX:21, MSZip).
	Compression string `json:"compression"`
	// Extractor names the tools and their versions.
	Extractor string   `json:"extractor"`
	Kernel    fileMeta `json:"kernel"`
	Modules   fileMeta `json:"modules"`
}

// fileMeta describes one extracted file.
type fileMeta struct {
	// Name is the file's name in the entry (kernel, modules.vhd or
	// artifacts.vhd); MSIPath its install path in the MSI
	// (ProgramFiles64Folder\WSL\tools\kernel) and FileKey its File key.
	Name    string `json:"name"`
	MSIPath string `json:"msi_path"`
	FileKey string `json:"file_key"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	// MD5Checked tells whether the MSI's MsiFileHash confirmed the bytes.
	MD5Checked bool `json:"md5_checked"`
}

func (m *meta) write(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

// readEntry returns the Stock of a complete cache entry. It fails with an
// error wrapping os.ErrNotExist when there is none, and with another
// error for an entry that does not check out (its record, names or file
// sizes).
func readEntry(entry, sum string) (*Stock, error) {
	b, err := os.ReadFile(filepath.Join(entry, metaFile))
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", metaFile, err)
	}
	switch {
	case m.Schema != metaSchema:
		return nil, fmt.Errorf("%s: format %d, want %d", metaFile, m.Schema, metaSchema)
	case m.MSISHA256 != sum:
		return nil, fmt.Errorf("%s: for MSI sha256 %s, not %s", metaFile, m.MSISHA256, sum)
	case m.Kernel.Name != KernelName || m.Modules.Name != ModulesVHD && m.Modules.Name != ArtifactsVHD:
		return nil, fmt.Errorf("%s: files %q and %q", metaFile, m.Kernel.Name, m.Modules.Name)
	}
	for _, f := range []fileMeta{m.Kernel, m.Modules} {
		st, err := os.Lstat(filepath.Join(entry, f.Name))
		if err != nil {
			return nil, fmt.Errorf("incomplete entry: %v", err)
		}
		if !st.Mode().IsRegular() || st.Size() != f.Size {
			return nil, fmt.Errorf("%s: %s is not a regular file of %d bytes", entry, f.Name, f.Size)
		}
	}
	return &Stock{
		Kernel: filepath.Join(entry, KernelName), Modules: filepath.Join(entry, m.Modules.Name), ModulesName: m.Modules.Name,
		KernelSHA256: m.Kernel.SHA256, ModulesSHA256: m.Modules.SHA256, MSIName: m.MSIName, MSISHA256: sum,
		ProductVersion: m.ProductVersion, Compression: m.Compression, Dir: entry,
	}, nil
}
