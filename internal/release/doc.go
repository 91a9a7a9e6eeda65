// Package release publishes a build's dist directory as a GitHub release,
// safely and idempotently, and prepares that directory (SHA256SUMS,
// wslconfig.txt, release-notes.md) from the build manifest.
//
// One release per (kernel tag, arch): linux-msft-wsl-6.6.87.2 is published
// as wsl-modules-6.6.87.2 (wsl-modules-6.6.87.2-arm64 for arm64). The order
// is always: create (or reuse) a draft, upload every asset, verify each
// one's size (and sha256, by downloading it back, when smaller than 16 MiB),
// and only then publish. Drafts are invisible to the public, so nothing is
// public before every asset is in place. See "Release rules" in
// docs/ARCHITECTURE.md for re-runs and changed module lists.
package release
