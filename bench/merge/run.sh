#!/usr/bin/env bash
# Benchmark: our `merge` against the reference pipeline a user would script
# with standard tools, on the Debian module tree prepared by
# scripts/setup.sh: the base is a dynamic VHD of an mke2fs-made ext4 of the
# tree without fat/vfat/msdos (like WSL's stock modules.vhd), and three
# packs (fat, vfat, msdos) are layered over it.
#
#   ours:      wsl-modules-action merge --base base.vhd --pack ... --out ours.vhdx
#   reference: qemu-img convert -O raw; debugfs rdump; copy the .ko files
#              into extra/<pack>/; depmod -b; mke2fs -t ext4 -d;
#              qemu-img convert -O vhdx
#
# Our merge also checks every pack (release, vermagic, symbols, CRCs)
# before writing; the reference does no checks. Each side runs RUNS times
# (default 3), alternating; the median wall time and peak RSS (from
# /usr/bin/time) and the output sizes are reported with ratios
# ours/reference.
#
# Usage: bench/merge/run.sh [RUNS]
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh" "$@"

# The base: the tree without fat, vfat and msdos, as an mke2fs ext4 in a VHD.
cp -al "$moddir" "$tmp/basetree"
rm -f "$tmp"/basetree/kernel/fs/fat/{fat,vfat,msdos}.ko "$tmp/basetree/build" "$tmp/basetree/source"
mke2fs -q -t ext4 -O metadata_csum,dir_index -d "$tmp/basetree" "$tmp/base.ext4" 600M
qemu-img convert -f raw -O vpc -o subformat=dynamic "$tmp/base.ext4" "$tmp/base.vhd"
rm -f "$tmp/base.ext4"
packs=()
for m in fat vfat msdos; do
  "$tmp/action" pack create --name "$m" --version 1 --kernel-release "$release" \
    --out "$tmp/$m.tar.zst" "$moddir/kernel/fs/fat/$m.ko" >/dev/null
  packs+=(--pack "$tmp/$m.tar.zst")
done
cat "$tmp/base.vhd" >/dev/null

ours() {
  rm -f "$tmp/ours.vhdx"
  /usr/bin/time -f "%e %M" -o "$tmp/t" "$tmp/action" merge --base "$tmp/base.vhd" "${packs[@]}" \
    --out "$tmp/ours.vhdx" >/dev/null 2>&1
  cat "$tmp/t"
}
ref() {
  rm -rf "$tmp/ref" "$tmp/ref.vhdx" "$tmp/ref.img" "$tmp/ref.raw"
  /usr/bin/time -f "%e %M" -o "$tmp/t" sh -c "
    set -e
    qemu-img convert -O raw '$tmp/base.vhd' '$tmp/ref.raw'
    mkdir -p '$tmp/ref/lib/modules/$release'
    debugfs -R 'rdump / $tmp/ref/lib/modules/$release' '$tmp/ref.raw' 2>/dev/null
    d='$tmp/ref/lib/modules/$release'
    rmdir \"\$d/lost+found\"
    for m in fat vfat msdos; do mkdir -p \"\$d/extra/\$m\"; cp '$moddir/kernel/fs/fat/'\$m.ko \"\$d/extra/\$m/\"; done
    printf 'extra/fat/fat.ko\\nextra/msdos/msdos.ko\\nextra/vfat/vfat.ko\\n' >> \"\$d/modules.order\"
    depmod -b '$tmp/ref' '$release'
    mke2fs -q -t ext4 -d \"\$d\" '$tmp/ref.img' 450M
    qemu-img convert -O vhdx '$tmp/ref.img' '$tmp/ref.vhdx'
  " >/dev/null
  cat "$tmp/t"
}
alternate
# Both results must resolve vfat across packs the same way.
mkdir -p "$tmp/chk/lib/modules"
qemu-img convert -O raw "$tmp/ours.vhdx" "$tmp/ours.raw"
mkdir -p "$tmp/chk/lib/modules/$release"
debugfs -R "rdump / $tmp/chk/lib/modules/$release" "$tmp/ours.raw" 2>/dev/null
d=$tmp/chk/lib/modules/$release
echo "ours:      $(modprobe -d "$tmp/chk" -S "$release" --show-depends vfat | tr '\n' ';')"
echo "reference: $(modprobe -d "$tmp/ref" -S "$release" --show-depends vfat | tr '\n' ';')"
for f in modules.dep modules.dep.bin modules.alias.bin modules.symbols.bin; do
  cmp -s "$d/$f" "$tmp/ref/lib/modules/$release/$f" && echo "$f: identical" || echo "$f: DIFFERS"
done

osize=$(stat -c %s "$tmp/ours.vhdx"); rsize=$(stat -c %s "$tmp/ref.vhdx")
echo "runs: $runs (median)"
printf 'wall:     ours %6.2f s   reference %6.2f s   ratio %.2f\n' "$ow_m" "$rw_m" "$(echo "$ow_m / $rw_m" | bc -l)"
printf 'peak RSS: ours %6d KiB reference %6d KiB ratio %.2f (reference: largest single process)\n' "$or_m" "$rr_m" "$(echo "$or_m / $rr_m" | bc -l)"
printf 'size:     ours %d B reference %d B ratio %.2f\n' "$osize" "$rsize" "$(echo "$osize / $rsize" | bc -l)"
