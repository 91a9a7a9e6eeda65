#!/usr/bin/env bash
# Benchmark: our pure-Go `image` against the reference pipeline
# `mke2fs -t ext4 -d` + `qemu-img convert -O vhdx`, on the Debian module
# tree prepared by scripts/setup.sh. Both build a disk of the same virtual
# size (the size our writer picks). Each side runs RUNS times (default 3),
# alternating; the median wall time and peak RSS (from /usr/bin/time) and
# the output sizes are reported with ratios ours/reference.
#
# Usage: bench/image/run.sh [RUNS]
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh" "$@"

# Warm the page cache so neither side pays for the first read.
cat $(find "$moddir" -type f) >/dev/null

ours() {
  rm -f "$tmp/ours.vhdx"
  /usr/bin/time -f "%e %M" -o "$tmp/t" "$tmp/action" image --source "$root" --kernel-release "$release" \
    --out "$tmp/ours.vhdx" --source-date-epoch 1700000000 >"$tmp/ours.out" 2>/dev/null
  cat "$tmp/t"
}
size=
ref() {
  rm -f "$tmp/ref.img" "$tmp/ref.vhdx"
  /usr/bin/time -f "%e %M" -o "$tmp/t" sh -c \
    "mke2fs -q -t ext4 -d '$moddir' '$tmp/ref.img' ${size}k && qemu-img convert -O vhdx '$tmp/ref.img' '$tmp/ref.vhdx'" >/dev/null
  cat "$tmp/t"
}
# The reference makes a disk of the virtual size (in KiB) ours picked.
size_from_ours() {
  if [ -z "$size" ]; then
    size=$(( $(qemu-img info --output=json "$tmp/ours.vhdx" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p') / 1024 ))
  fi
}

alternate size_from_ours
osize=$(stat -c %s "$tmp/ours.vhdx")
rsize=$(stat -c %s "$tmp/ref.vhdx")
files=$(find "$moddir" -type f | wc -l)
echo "tree: $moddir ($files files, $(du -sb "$moddir" | cut -f1) bytes), virtual disk $((size / 1024)) MiB, $runs runs, medians"
echo "ours walls: ${ow[*]}   reference walls: ${rw[*]}"
printf '%-34s %12s %12s %8s\n' "" "ours" "reference" "ratio"
printf '%-34s %12s %12s %8.2f\n' "wall time (s)" "$ow_m" "$rw_m" "$(echo "$ow_m / $rw_m" | bc -l)"
printf '%-34s %12s %12s %8.2f\n' "peak RSS (KiB)" "$or_m" "$rr_m" "$(echo "$or_m / $rr_m" | bc -l)"
printf '%-34s %12s %12s %8.3f\n' "output size (bytes)" "$osize" "$rsize" "$(echo "$osize / $rsize" | bc -l)"
echo "targets: wall <= 1.00, size <= 1.05, our peak RSS <= 262144 KiB"
echo "(ours also hashes the raw disk and the VHDX; the reference computes no hash)"
