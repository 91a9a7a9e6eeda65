// Package merge layers module packs over a base module tree (a directory,
// Microsoft's stock modules.vhd, a modules.vhdx of ours, or any source
// modtree.Open reads): PlanMerge checks every pack against the base
// before anything is written (release, arch, vermagic, symbol resolution,
// CRCs, duplicates), and Merge composes the result as a modtree overlay,
// runs depmod over it and writes the image through internal/stage,
// reading the base in place.
package merge
