package kimage

// Test hooks for the external tests (package kimage_test), which need
// internal/buildtest and so cannot be in this package.

// Data returns the in-memory kernel (decompressed vmlinux ELF or raw
// Image), nil for an ELF read from disk.
func (f *File) Data() []byte { return f.raw }

// ScanFlat runs the structural search over a flat image.
func ScanFlat(img []byte) (*ExportTable, error) {
	t, err := scanTables(img)
	if err != nil {
		return nil, err
	}
	return t.decode()
}
