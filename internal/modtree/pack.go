package modtree

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"
)

// PackDir is where a pack's modules go in a tree: extra/<pack name>/.
func PackDir(name string) string { return "extra/" + name + "/" }

// FromPack returns the modules of an opened pack as a tree: each module at
// extra/<pack>/<its path in the pack>, with the pack's name as Origin and
// its release from pack.json.
func FromPack(p *pack.Pack) *Tree {
	t := &Tree{Release: p.Meta.KernelRelease, Source: Source{Path: p.Source, Kind: KindPack, ReleaseFrom: "pack.json"}}
	for _, md := range p.Meta.Modules {
		data := p.Files[md.File]
		t.Modules = append(t.Modules, &Entry{
			Path:   PackDir(p.Meta.Name) + strings.TrimPrefix(md.File, p.Meta.Name+"/"),
			Module: p.Parsed[md.File], Origin: p.Meta.Name, Size: int64(len(data)),
			open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		})
	}
	sortEntries(t.Modules)
	return t
}

func openPack(src string, o OpenOptions) (*Tree, error) {
	p, err := pack.Open(src)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	t := FromPack(p)
	if o.Release != "" && o.Release != t.Release {
		return nil, fmt.Errorf("modtree: %s: pack for kernel release %s, not %s", src, t.Release, o.Release)
	}
	return t, nil
}
