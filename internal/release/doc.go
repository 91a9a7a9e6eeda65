// Package release publishes a build's dist directory as a GitHub release,
// safely and idempotently, and prepares that directory (SHA256SUMS,
// wslconfig.txt, SOURCES.md, release-notes.md, the redacted build logs
// and the path: modules' source archive) from the build manifest.
//
// One release per (kernel tag, arch): linux-msft-wsl-6.6.87.2 is published
// as wsl-modules-6.6.87.2 (wsl-modules-6.6.87.2-arm64 for arm64). The order
// is always: create (or reuse) a draft, upload every asset, verify each
// one's size (and sha256, by downloading it back, when smaller than 16 MiB),
// check the draft once more, and only then publish. Drafts are invisible to
// the public, so nothing is public before every asset is in place. See
// "Release rules" in docs/ARCHITECTURE.md for re-runs and changed module
// lists.
//
// # Concurrent publishes
//
// The release body ends with two hidden markers: the manifest hash (the
// build's inputs; it decides "up to date") and the assets identity (the
// sha256 of SHA256SUMS; it names the exact bytes). A run reuses only a
// draft with both markers equal to its own: a draft of this very build,
// whose assets, if another run of it uploaded them, are the same files.
// Drafts of other builds are never reused, and deleted only once older
// than Options.StaleDraftAge (24 hours by default), since a younger one may
// be another run's, still uploading. Just before publishing, the draft is
// read again: it must still be a draft with this build's markers, holding
// exactly one uploaded copy of each planned asset with GitHub's sha256
// digest equal to the planned one. After publishing, the release is read
// back and checked the same way; if it does not hold the build, Publish
// fails (turning it back into a draft where GitHub allows). When two runs
// of different builds race for one tag, the second one's publish is
// refused (the tag is taken) and it publishes the next revision; when two
// runs of the same build race, the second finds the build published and
// reports "up to date".
//
// # Latest
//
// GitHub has one "Latest" release per repository. It belongs to the x86_64
// releases (so releases/latest/download/bzImage keeps working), or to
// the arm64 releases in a repository without any x86_64 release of ours
// (Index.LatestArch). A release is published with make_latest "true" only
// if it is the highest of that family: highest kernel version, then
// highest revision (Index.Highest); every other release (an older kernel
// backfilled or built by track: 6.6, a revision of an older kernel, an
// arm64 release next to x86_64 ones) gets "false". After publishing, the
// repository's latest release is read and, if it is not that highest
// release (a concurrent publish decided from an older listing, or an older
// version of this tool sent "true"), that release is marked latest.
package release
