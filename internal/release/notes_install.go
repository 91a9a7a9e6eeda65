package release

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// installSection is how to install the release on Windows.
func installSection(p func(string, ...any), m *manifest.Manifest, tag string) {
	p("")
	p("## Install")
	p("")
	p("1. Download `%s` and `%s`.", ImageFile(m), VHDXFile)
	p("2. Keep both in a folder that is **not sparse, compressed or encrypted**, e.g. `%%UserProfile%%\\%s`. Windows refuses VHDX files that are (*Virtual hard disk files must be uncompressed and unencrypted and must not be sparse*); use tools that do not restore sparseness when copying.", winFolder(tag))
	p("3. Edit `%%UserProfile%%\\.wslconfig` and merge this `[wsl2]` snippet (also attached as `%s`), with `<you>` replaced by your Windows user name, since `.wslconfig` needs absolute paths and does not expand `%%UserProfile%%`:", WSLConfFile)
	p("")
	p("   ```ini")
	for _, l := range wslConfigLines(m, tag) {
		p("   %s", l)
	}
	p("   ```")
	p("")
	p("   `kernel=` is required: WSL refuses `kernelModules=` without a custom `kernel=` (*Customised kernel modules were supplied without specifying a customised kernel*), and the modules must match the running kernel exactly, so use the kernel from this release.")
	if isStock(m) {
		p("   Although `%s` is Microsoft's own kernel, point `kernel=` at this pinned copy, not at `%s`: a WSL update replaces that file with a newer kernel, on which these modules no longer load.", ImageFile(m), StockKernelPath)
	}
	p("4. Run `wsl --shutdown`, start WSL, and check `uname -r` prints `%s`.", m.Kernel.Release)
	p("")
	p("### `E_ACCESSDENIED` on WSL 2.7.1–2.7.4 and 2.8.0–2.8.5")
	p("")
	p("These versions fail with `Wsl/Service/CreateInstance/CreateVm/HCS/E_ACCESSDENIED` when the VHDX is in a folder the VM worker process cannot read, typically under the user profile. Update WSL (fixed in 2.7.5 and 2.8.6), move both files to a folder directly under `C:\\`, or grant read access:")
	p("")
	p("```")
	p(`icacls %%UserProfile%%\%s\%s /grant "*S-1-5-32-545:(RX)" "*S-1-15-2-1:(RX)" "*S-1-15-2-2:(RX)"`, winFolder(tag), VHDXFile)
	p("```")
}

// verifySection is how a user checks the downloads: checksums, and build
// provenance when the release was attested.
func verifySection(p func(string, ...any), m *manifest.Manifest, repo string) {
	repo = cmp.Or(repo, "<owner>/<repo>")
	p("")
	p("## Verify the download")
	p("")
	p("- Compare each file's sha256 with `%s` (below): `Get-FileHash -Algorithm SHA256 %s` in PowerShell, or `sha256sum -c %s` in a shell.", SumsFile, VHDXFile, SumsFile)
	p("- Build provenance, if this release was attested (its workflow ran `actions/attest-build-provenance` on the assets): `gh attestation verify %s -R %s` (and the same for `%s`) checks that the file was built by that repository's workflow, and from which commit. Without an attestation it finds none.", VHDXFile, repo, ImageFile(m))
}

// wslRanges renders WSL versions as ranges of consecutive versions, e.g.
// "2.5.9 – 2.6.3, 2.8.12". With seen (every version looked at), two
// versions are consecutive when no other seen version lies between them;
// without it, only when they are patch releases of one minor line that
// follow each other (2.6.2, 2.6.3), since the 2.7.x and 2.8.x lines were
// released in parallel and a gap may hold another kernel. Pre-releases
// are marked and never share a range with releases.
func wslRanges(rels []manifest.WSLRelease, seen []string) string {
	var vs []manifest.WSLRelease
	for _, r := range rels {
		if !slices.ContainsFunc(vs, func(x manifest.WSLRelease) bool { return x.Version == r.Version }) {
			vs = append(vs, r)
		}
	}
	slices.SortFunc(vs, func(a, b manifest.WSLRelease) int { return compareDotted(a.Version, b.Version) })
	order := map[string]int{}
	if len(seen) > 0 {
		all := append([]string(nil), seen...)
		for _, r := range vs {
			all = append(all, r.Version)
		}
		slices.SortFunc(all, compareDotted)
		all = slices.Compact(all)
		for i, s := range all {
			order[s] = i
		}
	}
	next := func(a, b string) bool {
		if len(order) > 0 {
			return order[b] == order[a]+1
		}
		x, y := dotted(a), dotted(b)
		return len(x) == 3 && len(y) == 3 && x[0] == y[0] && x[1] == y[1] && y[2] == x[2]+1
	}
	var parts []string
	for i := 0; i < len(vs); {
		j := i
		for j+1 < len(vs) && vs[j+1].Prerelease == vs[i].Prerelease && next(vs[j].Version, vs[j+1].Version) {
			j++
		}
		s := vs[i].Version
		if j > i {
			s += " – " + vs[j].Version
		}
		if vs[i].Prerelease {
			s += " (pre-release)"
		}
		parts = append(parts, s)
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// dotted parses "2.5.10" as [2 5 10]; nil if a field is not a number.
func dotted(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ".") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil
		}
		out = append(out, n)
	}
	return out
}

// compareDotted orders versions numerically by field (non-numeric ones
// after the numeric ones, by string).
func compareDotted(a, b string) int {
	x, y := dotted(a), dotted(b)
	switch {
	case x == nil && y == nil:
		return strings.Compare(a, b)
	case x == nil:
		return 1
	case y == nil:
		return -1
	}
	return slices.Compare(x, y)
}

func kernelRepo(m *manifest.Manifest) string {
	return cmp.Or(m.Kernel.Source.Repo, "microsoft/WSL2-Linux-Kernel")
}

func pinText(s manifest.Source) string {
	switch {
	case s.Commit != "":
		return "commit " + short(s.Commit)
	case s.SHA256 != "":
		return "sha256 " + short(s.SHA256)
	}
	return s.Kind
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// backtick quotes s as Markdown code.
func backtick(s string) string { return "`" + strings.ReplaceAll(s, "`", "'") + "`" }
