#!/usr/bin/env bash
# One-time setup of a Debian 12 machine for wsl-modules-action: the kernel
# build dependencies, the independent checkers used by the tests (qemu-img,
# e2fsprogs, kmod, qemu-system-x86, busybox, dkms) and the real test corpora
# (Debian's module tree, kernel source and DKMS packages),
# cached in $WSLMOD_TEST_CACHE (default /var/cache/wsl-modules-ci).
# Idempotent: a second run only checks that everything is present.
set -euo pipefail

cache=${WSLMOD_TEST_CACHE:-/var/cache/wsl-modules-ci}

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs=(
  # kernel and module builds
  build-essential flex bison bc libelf-dev libssl-dev dwarves cpio rsync
  xz-utils zstd git ca-certificates python3
  # the other kernel payload compressions internal/kimage reads
  bzip2 lz4
  # real inputs: kernel source and DKMS with the corpus of Debian *-dkms
  # packages that internal/modbuild builds both ways (TestDKMSCorpus);
  # openrazer-driver-dkms is left out (it pulls in udev and a systemd upgrade)
  linux-source-6.12 dkms patch
  acpi-call-dkms apfs-dkms bbswitch-dkms ddcci-dkms dm-writeboost-dkms evdi-dkms
  gost-crypto-dkms iptables-netflow-dkms jool-dkms lime-forensics-dkms nat-rtsp-dkms
  openvpn-dco-dkms rapiddisk-dkms tp-smapi-dkms v4l2loopback-dkms vpoll-dkms
  xtables-addons-dkms
  # independent checkers and the boot test
  kmod e2fsprogs qemu-utils qemu-system-x86 busybox-static
  # the Actions lint (scripts/lint-actions.sh) checks run: scripts with it
  shellcheck
  # arm64 kernel-devel trees: host programs cross-built for aarch64 (internal/devel)
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  # running those aarch64 host programs in the tests (qemu-aarch64)
  qemu-user
  # WSL installers: MSIs built with wixl for the tests, read with
  # msiextract and 7-Zip (internal/wslmsi)
  wixl msitools p7zip-full
  # a real LZX:21 cabinet (InstallShield's, in clam_IScab_int.exe) for the
  # cabinet reader's tests (internal/wslmsi TestOpenLZX), unpacked with gcab
  clamav-testfiles gcab
  # file(1) names the built kernel images in internal/kbuild's tests
  file
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

$SUDO mkdir -p "$cache"
$SUDO chown "$(id -u):$(id -g)" "$cache"

# A real module tree: Debian's linux-image package (4000+ modules), the one
# linux-image-amd64 depends on today (superseded ABI packages leave the
# archive, so no ABI number is pinned here); WSLMOD_DEBIAN_IMAGE overrides
# it. The resolved name is recorded: a new ABI refetches both packages.
debian_image=${WSLMOD_DEBIAN_IMAGE:-}
if [ -z "$debian_image" ]; then
  debian_image=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$debian_image" ]; then
    $SUDO apt-get update -qq
    debian_image=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$debian_image" ] || { echo "setup: cannot resolve linux-image-amd64 to a linux-image-<abi> package" >&2; exit 1; }
fi
if [ "$(cat "$cache/debian-image.name" 2>/dev/null)" != "$debian_image" ]; then
  rm -rf "$cache/debian-image" "$cache/debian-symvers" "$cache/debian-image.name"
fi
if ! ls "$cache"/debian-image/lib/modules/*/modules.order >/dev/null 2>&1; then
  echo "setup: fetching $debian_image"
  tmp=$(mktemp -d "$cache/.dl-XXXXXX")
  (cd "$tmp" && apt-get download "$debian_image" >/dev/null 2>&1 || $SUDO apt-get download "$debian_image")
  dpkg -x "$tmp"/*.deb "$tmp/tree"
  rm -rf "$cache/debian-image"
  mv "$tmp/tree" "$cache/debian-image"
  rm -rf "$tmp"
fi

# Module.symvers of the same kernel (from its linux-headers package), for
# the depmod -E checks.
debian_headers=${debian_image/linux-image-/linux-headers-}
if [ ! -s "$cache/debian-symvers/Module.symvers" ]; then
  echo "setup: fetching $debian_headers (Module.symvers)"
  tmp=$(mktemp -d "$cache/.dl-XXXXXX")
  (cd "$tmp" && apt-get download "$debian_headers" >/dev/null 2>&1 || $SUDO apt-get download "$debian_headers")
  dpkg -x "$tmp"/*.deb "$tmp/tree"
  mkdir -p "$cache/debian-symvers"
  cp "$tmp"/tree/usr/src/*/Module.symvers "$cache/debian-symvers/.Module.symvers.tmp"
  mv "$cache/debian-symvers/.Module.symvers.tmp" "$cache/debian-symvers/Module.symvers"
  rm -rf "$tmp"
fi
echo "$debian_image" > "$cache/debian-image.name"

go version >/dev/null 2>&1 || { echo "setup: Go is required (https://go.dev/dl/)" >&2; exit 1; }
go mod download
echo "setup: ok (test cache: $cache)"
