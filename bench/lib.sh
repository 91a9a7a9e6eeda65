# shellcheck shell=bash disable=SC2034 # it sets variables for the script
# Shared part of the benchmark scripts that compare our command with a
# reference pipeline (bench/*/run.sh). Source it, after set -euo pipefail,
# with the script's arguments:
#
#   . "$(dirname "$0")/../lib.sh" "$@"
#
# It goes to the repository root and sets runs (the first argument,
# default 3), root (the Debian image tree scripts/setup.sh prepared in the
# test cache), release, moddir (root's lib/modules/<release>) and tmp (a
# new directory, removed on exit, holding the action built as
# $tmp/action). /usr/bin/time must exist.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
runs=${1:-3}
cache=${WSLMOD_TEST_CACHE:-/var/cache/wsl-modules-ci}
root=$cache/debian-image
release=$(ls "$root/lib/modules")
moddir=$root/lib/modules/$release
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/action" ./cmd/action

# median prints the median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# alternate [HOOK] runs the script's functions ours and ref, each printing
# "WALL RSS" (as /usr/bin/time -f "%e %M"), $runs times, alternating, and
# HOOK (a command, if given) after each run of ours. It sets ow, orss, rw
# and rrss (ours' and the reference's walls and peak RSS, per run) and
# their medians ow_m, or_m, rw_m and rr_m.
alternate() {
  local w m
  ow=(); orss=(); rw=(); rrss=()
  for _ in $(seq "$runs"); do
    read -r w m < <(ours); ow+=("$w"); orss+=("$m")
    if [ $# -gt 0 ]; then "$@"; fi
    read -r w m < <(ref); rw+=("$w"); rrss+=("$m")
  done
  ow_m=$(printf '%s\n' "${ow[@]}" | median); rw_m=$(printf '%s\n' "${rw[@]}" | median)
  or_m=$(printf '%s\n' "${orss[@]}" | median); rr_m=$(printf '%s\n' "${rrss[@]}" | median)
}
