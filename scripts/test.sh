#!/usr/bin/env bash
# The test suite, as CI and the README run it (after scripts/setup.sh):
#  1. the unit tests (-short: no test kernel, Debian tree or kernel
#     source) under the race detector;
#  2. the whole suite without it: real kernel builds, module builds
#     against them, qemu boots, the DKMS corpus, the Debian tree. The race
#     detector slows Go's CPU-bound work (ext4 and depmod writers, source
#     scans, decompression) several times over, which a cold run on 2
#     cores cannot afford; the concurrency those tests drive is the unit
#     tests' code.
# Extra arguments go to both go test runs (e.g. -run TestX).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
start=$SECONDS
go test -race -short -count=1 -timeout 30m "$@" ./...
echo "test: unit tests under -race took $((SECONDS - start)) s"
go test -count=1 -timeout 80m "$@" ./...
echo "test: all tests took $((SECONDS - start)) s"
