package modtree

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
)

// openImage opens a VHDX, VHD or raw image as a tree, read in place.
func openImage(ctx context.Context, src string, o OpenOptions) (*Tree, error) {
	img, format, closer, err := openImageFS(src)
	if err != nil {
		return nil, fmt.Errorf("modtree: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			closer.Close()
		}
	}()
	mfs, src2, err := imageModuleDir(img, src, o.Release)
	if err != nil {
		return nil, err
	}
	src2.Path, src2.Kind = src, format
	done := o.Progress.Step("loading modules from %s (%s, %s layout)", src, format, src2.Layout)
	t, err := load(ctx, mfs, "", src2.relRelease)
	done()
	if err != nil {
		return nil, fmt.Errorf("modtree: %s: %w", src, err)
	}
	t.Source, t.closer = src2.Source, closer
	ok = true
	return t, nil
}

// imageSource is a Source with the release the layout gave.
type imageSource struct {
	Source
	relRelease string
}

// imageModuleDir finds the module directory of an image by its layout
// (see Open for the rule).
func imageModuleDir(img fs.FS, src, release string) (fs.FS, imageSource, error) {
	var nested []string
	for _, s := range subdirs(img, ".") {
		if st, err := fs.Lstat(img, s+"/modules"); err == nil && st.IsDir() {
			nested = append(nested, s)
		}
	}
	flat := IsModuleDir(img)
	var out imageSource
	switch {
	case release != "" && contains(nested, release):
		out.relRelease, out.ReleaseFrom = release, "--kernel-release"
	case release == "" && len(nested) == 1 && !flat:
		out.relRelease, out.ReleaseFrom = nested[0], "nested directory name"
	case release == "" && len(nested) > 1 && !flat:
		return nil, out, fmt.Errorf("modtree: %s: nested image with several releases (%s); choose one with --kernel-release", src, strings.Join(nested, ", "))
	case flat:
		out.Layout = LayoutFlat
		if release != "" {
			out.relRelease, out.ReleaseFrom = release, "--kernel-release"
		}
		return img, out, nil
	case len(nested) > 0:
		return nil, out, fmt.Errorf("modtree: %s: nested image for %s, not %s", src, strings.Join(nested, ", "), release)
	default:
		return nil, out, fmt.Errorf("modtree: %s: the image holds neither a module tree at its root (flat layout: modules.dep, modules.order or kernel/) nor <release>/modules (nested layout)", src)
	}
	out.Layout = LayoutNested
	rel := out.relRelease
	mfs, err := fs.Sub(img, rel+"/modules")
	if err != nil {
		return nil, out, fmt.Errorf("modtree: %s: %w", src, err)
	}
	if st, err := fs.Lstat(img, rel+"/linux-headers"); err == nil && st.IsDir() {
		out.Headers, _ = fs.Sub(img, rel+"/linux-headers")
	}
	out.Ignored = ignoredNested(img, rel)
	return mfs, out, nil
}

// ignoredNested lists what a nested image holds besides <rel>/modules and
// <rel>/linux-headers.
func ignoredNested(img fs.FS, rel string) []string {
	var out []string
	ents, _ := fs.ReadDir(img, ".")
	for _, e := range ents {
		if e.Name() != rel && e.Name() != "lost+found" {
			out = append(out, e.Name())
		}
	}
	ents, _ = fs.ReadDir(img, rel)
	for _, e := range ents {
		if e.Name() != "modules" && e.Name() != "linux-headers" {
			out = append(out, rel+"/"+e.Name())
		}
	}
	return out
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
