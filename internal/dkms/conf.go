package dkms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// confVars are the dkms.conf variables DKMS 3.0.10 reads back after
// sourcing the file (its dkms_conf_variables), plus the two directives
// newer DKMS versions read (BUILD_EXCLUSIVE_KERNEL_MIN/_MAX).
var confVars = []string{
	"CLEAN", "PACKAGE_NAME", "PACKAGE_VERSION", "POST_ADD", "POST_BUILD", "POST_INSTALL", "POST_REMOVE",
	"PRE_BUILD", "PRE_INSTALL", "BUILD_DEPENDS", "BUILD_EXCLUSIVE_KERNEL", "BUILD_EXCLUSIVE_ARCH",
	"BUILD_EXCLUSIVE_CONFIG", "BUILD_EXCLUSIVE_KERNEL_MIN", "BUILD_EXCLUSIVE_KERNEL_MAX", "OBSOLETE_BY",
	"MAKE", "MAKE_MATCH", "PATCH", "PATCH_MATCH", "BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION",
	"DEST_MODULE_NAME", "DEST_MODULE_LOCATION", "STRIP", "AUTOINSTALL", "NO_WEAK_MODULES",
	"REMAKE_INITRD", "MODULES_CONF", "MODULES_CONF_OBSOLETES", "MODULES_CONF_ALIAS_TYPE", "MODULES_CONF_OBSOLETE_ONLY",
}

// readScript reads a dkms.conf as DKMS does and prints the result as
// NUL-terminated fields. The facts it follows (dkms 3.0.10, read_conf and
// safe_source):
//   - the file is sourced by bash (extglob on) in a subshell with its
//     standard output discarded, with $kernelver, $arch, $kernel_source_dir,
//     $kernel_config, $dkms_tree, $source_tree, $module and $module_version
//     defined as shell variables;
//   - every element of the known variables is then printed as
//     NAME[i]="value" through an unquoted expansion (so runs of blanks
//     collapse into one space) and that text is evaluated again (so an
//     escaped \$x in dkms.conf expands at this point);
//   - MAKE_MATCH[], PATCH_MATCH[], BUILD_EXCLUSIVE_KERNEL and _ARCH are bash
//     [[ =~ ]] regular expressions against $kernelver and $arch, and
//     BUILD_EXCLUSIVE_CONFIG entries are grep -E patterns for ^NAME=[ym] in
//     $kernel_source_dir/.config, checked only when that file exists.
//
// Output records: V name index value; R name index status (of =~);
// C entry (a BUILD_EXCLUSIVE_CONFIG entry not satisfied); T make-argument
// (CC=clang, LD=ld.lld); P compiler (for PRE_BUILD).
const readScript = `shopt -s extglob
kernelver=$1 arch=$2 kernel_source_dir=$3 dkms_tree=$4 source_tree=$5
module=$7 module_version=$8
kernel_config=$kernel_source_dir/.config
__conf=$6 __names=$9
unset $__names
__assign=$(
	. "$__conf" >/dev/null
	for __n in $__names; do
		eval "__ix=(\"\${!$__n[@]}\")"
		for __i in "${__ix[@]}"; do
			eval "echo $__n[$__i]=\\\"\${$__n[$__i]}\\\""
		done
	done
)
eval "$__assign"
__out() { printf '%s\0' "$@"; }
for __n in $__names; do
	eval "__ix=(\"\${!$__n[@]}\")"
	for __i in "${__ix[@]}"; do
		eval "__v=\${$__n[$__i]}"
		__out V "$__n" "$__i" "$__v"
	done
done
for __i in "${!MAKE_MATCH[@]}"; do
	[[ $kernelver =~ ${MAKE_MATCH[$__i]} ]]; __out R MAKE_MATCH "$__i" $?
done
for __i in "${!PATCH_MATCH[@]}"; do
	[[ $kernelver =~ ${PATCH_MATCH[$__i]} ]]; __out R PATCH_MATCH "$__i" $?
done
if [[ $BUILD_EXCLUSIVE_KERNEL ]]; then
	[[ $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]]; __out R BUILD_EXCLUSIVE_KERNEL 0 $?
fi
if [[ $BUILD_EXCLUSIVE_ARCH ]]; then
	[[ $arch =~ $BUILD_EXCLUSIVE_ARCH ]]; __out R BUILD_EXCLUSIVE_ARCH 0 $?
fi
if [[ $BUILD_EXCLUSIVE_CONFIG && -e $kernel_config ]]; then
	for __k in $BUILD_EXCLUSIVE_CONFIG; do
		case $__k in
		!*) grep -q -E "^${__k#!}=[ym]" "$kernel_config" && __out C "$__k" ;;
		*) grep -q -E "^${__k}=[ym]" "$kernel_config" || __out C "$__k" ;;
		esac
	done
fi
if [[ -e $kernel_source_dir/vmlinux ]]; then
	readelf -p .comment "$kernel_source_dir/vmlinux" 2>/dev/null | grep -q clang && __out T CC=clang
	readelf -p .comment "$kernel_source_dir/vmlinux" 2>/dev/null | grep -q LLD && __out T LD=ld.lld
elif [[ -e $kernel_config ]]; then
	grep -q CONFIG_CC_IS_CLANG=y "$kernel_config" && __out T CC=clang
	grep -q CONFIG_LD_IS_LLD=y "$kernel_config" && __out T LD=ld.lld
fi
if [[ -e $kernel_config ]]; then
	__cc=$(sed -n 's|^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*"|\1|p' "$kernel_config")
	[[ $__cc ]] && command -v "$__cc" >/dev/null && __out P "$__cc"
fi
exit 0
`

// ReadConf reads the dkms.conf at file for the kernel and arch in v, as
// DKMS does (see readScript): it is a shell fragment (real ones use if/fi,
// grep the kernel's .config, pushd into their own directory), so it is
// sourced by bash, in the file's directory, with the environment of this
// process less its secrets. Like `dkms add <dir>` followed by `dkms build`,
// it is read once to learn PACKAGE_NAME and PACKAGE_VERSION and once more
// with $module and $module_version set to them. Host overrides
// (/etc/dkms/<module>.conf) are not read: a build must not depend on the
// machine it runs on.
//
// A dkms.conf DKMS would refuse ("Bad conf file") is an error listing
// DKMS's reasons; so is one whose names would leave the build directory.
func ReadConf(ctx context.Context, file string, v Vars) (*Conf, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("dkms: %w", err)
	}
	first, err := source(ctx, abs, v, "", "")
	if err != nil {
		return nil, err
	}
	name, version := first.scalar("PACKAGE_NAME"), first.scalar("PACKAGE_VERSION")
	r := first
	if name != "" && version != "" {
		if r, err = source(ctx, abs, v, name, version); err != nil {
			return nil, err
		}
	}
	return r.conf(abs, v)
}

// sourced is the output of one run of readScript.
type sourced struct {
	vals     map[string]map[int]string
	matches  map[string]map[int]int
	unmet    []string // BUILD_EXCLUSIVE_CONFIG entries not satisfied
	tool     []string // CC=clang, LD=ld.lld
	cc       string
	messages string
}

func source(ctx context.Context, file string, v Vars, module, version string) (*sourced, error) {
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", readScript, "dkms.conf",
		v.KernelVer, v.Arch, v.KernelSourceDir, v.DKMSTree, v.SourceTree, file, module, version,
		strings.Join(confVars, " "))
	cmd.Dir = filepath.Dir(file)
	cmd.Env = safeenv.Environ(scriptVars...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: reading it with bash: %v: %s", file, err, strings.TrimSpace(stderr.String()))
	}
	s := &sourced{vals: map[string]map[int]string{}, matches: map[string]map[int]int{},
		messages: strings.TrimSpace(stderr.String())}
	f := strings.Split(stdout.String(), "\x00")
	for i := 0; i < len(f); {
		switch f[i] {
		case "V", "R":
			if i+3 >= len(f) {
				return nil, fmt.Errorf("%s: reading it with bash: truncated output", file)
			}
			idx, err := strconv.Atoi(f[i+2])
			if err != nil {
				return nil, fmt.Errorf("%s: reading it with bash: index %q", file, f[i+2])
			}
			if f[i] == "V" {
				put(s.vals, f[i+1], idx, f[i+3])
			} else {
				st, _ := strconv.Atoi(f[i+3])
				put(s.matches, f[i+1], idx, st)
			}
			i += 4
		case "C", "T", "P":
			if i+1 >= len(f) {
				return nil, fmt.Errorf("%s: reading it with bash: truncated output", file)
			}
			switch f[i] {
			case "C":
				s.unmet = append(s.unmet, f[i+1])
			case "T":
				s.tool = append(s.tool, f[i+1])
			default:
				s.cc = f[i+1]
			}
			i += 2
		default:
			i++ // the empty string after the last NUL
		}
	}
	return s, nil
}

// scriptVars are the names the script defines itself: an exported
// variable of the same name would keep its export flag.
var scriptVars = []string{"kernelver", "arch", "kernel_source_dir", "kernel_config", "dkms_tree",
	"source_tree", "module", "module_version", "BASH_ENV", "ENV", "CDPATH", "GLOBIGNORE", "SHELLOPTS", "BASHOPTS"}

func put[V any](m map[string]map[int]V, name string, i int, v V) {
	if m[name] == nil {
		m[name] = map[int]V{}
	}
	m[name][i] = v
}

func (s *sourced) scalar(n string) string { return s.vals[n][0] }

// at is ${NAME[i]} ("" when unset); count is ${#NAME[@]}.
func (s *sourced) at(n string, i int) string { return s.vals[n][i] }
func (s *sourced) count(n string) int        { return len(s.vals[n]) }
func (s *sourced) matched(n string, i int) bool {
	st, ok := s.matches[n][i]
	return ok && st == 0
}

// conf applies DKMS's defaults and checks (read_conf) to what was read.
func (s *sourced) conf(file string, v Vars) (*Conf, error) {
	c := &Conf{File: file, PackageName: s.scalar("PACKAGE_NAME"), PackageVersion: s.scalar("PACKAGE_VERSION"),
		Clean: s.scalar("CLEAN"), PreBuild: s.scalar("PRE_BUILD"), PostBuild: s.scalar("POST_BUILD"),
		PreBuildCC: s.cc, Messages: s.messages}
	var bad []string
	c.Modules, bad = s.modules()
	if c.PackageName == "" {
		bad = append(bad, "No 'PACKAGE_NAME' directive specified.")
	}
	if c.PackageVersion == "" {
		bad = append(bad, "No 'PACKAGE_VERSION' directive specified.")
	}
	bad = append(bad, c.unsafe()...)
	if len(bad) > 0 {
		for i := range bad {
			bad[i] = "dkms.conf: Error! " + bad[i]
		}
		return nil, fmt.Errorf("%s: %w: it does not represent a valid dkms.conf file:\n%s", file, ErrBadConf, strings.Join(bad, "\n"))
	}
	build := v.BuildDir(c.PackageName, c.PackageVersion)
	c.MakeCommand = s.makeCommand()
	if c.MakeCommand == "" {
		c.MakeCommand = "make -C " + v.KernelSourceDir + " M=" + build
	}
	for _, t := range s.tool {
		c.MakeCommand += " " + t
	}
	if c.Clean == "" {
		c.Clean = "make -C " + v.KernelSourceDir + " M=" + build + " clean"
	}
	for i := 0; i < s.count("PATCH"); i++ {
		if p := s.at("PATCH", i); p != "" && (s.at("PATCH_MATCH", i) == "" || s.matched("PATCH_MATCH", i)) {
			c.Patches = append(c.Patches, p)
		}
	}
	for _, p := range c.Patches {
		if filepath.IsAbs(p) || !filepath.IsLocal(p) {
			return nil, fmt.Errorf("%s: PATCH %q must name a file under patches/", file, p)
		}
	}
	c.Excluded = s.excluded(v.KernelVer)
	c.Notes = s.notes()
	return c, nil
}

// makeCommand selects MAKE[] as DKMS does: MAKE[0] unless MAKE_MATCH[0]
// is set, then the last MAKE[i] whose MAKE_MATCH[i] matches.
func (s *sourced) makeCommand() string {
	cmd := ""
	if s.at("MAKE_MATCH", 0) == "" {
		cmd = s.at("MAKE", 0)
	}
	for i := 0; i < s.count("MAKE"); i++ {
		if s.at("MAKE", i) != "" && s.at("MAKE_MATCH", i) != "" && s.matched("MAKE_MATCH", i) {
			cmd = s.at("MAKE", i)
		}
	}
	return cmd
}

// modules builds the module records and DKMS's complaints about them.
func (s *sourced) modules() ([]Module, []string) {
	n := 0
	for _, a := range []string{"BUILT_MODULE_NAME", "BUILT_MODULE_LOCATION", "DEST_MODULE_NAME", "DEST_MODULE_LOCATION"} {
		n = max(n, s.count(a))
	}
	var out []Module
	var bad []string
	strip0 := ""
	for i := 0; i < n; i++ {
		m := Module{BuiltName: s.at("BUILT_MODULE_NAME", i), BuiltLocation: s.at("BUILT_MODULE_LOCATION", i),
			DestName: s.at("DEST_MODULE_NAME", i), DestLocation: s.at("DEST_MODULE_LOCATION", i)}
		strip := ""
		switch st := s.at("STRIP", i); {
		case strings.HasPrefix(st, "n"), strings.HasPrefix(st, "N"):
			strip = "no"
		case strings.HasPrefix(st, "y"), strings.HasPrefix(st, "Y"):
			strip = "yes"
		case st == "":
			strip = strip0
			if strip == "" {
				strip = "yes"
			}
		}
		if i == 0 {
			strip0 = strip
		}
		m.Strip = strip != "no"
		if m.BuiltName == "" && s.count("DEST_MODULE_LOCATION") == 1 {
			m.BuiltName = s.scalar("PACKAGE_NAME")
		}
		if m.DestName == "" {
			m.DestName = m.BuiltName
		}
		if m.BuiltLocation != "" && !strings.HasSuffix(m.BuiltLocation, "/") {
			m.BuiltLocation += "/"
		}
		bad = append(bad, m.problems(i)...)
		out = append(out, m)
	}
	if n == 0 {
		bad = append(bad, "No 'DEST_MODULE_LOCATION' directive specified.")
	}
	return out, bad
}

// problems are DKMS's checks of one record.
func (m Module) problems(i int) []string {
	var bad []string
	if m.BuiltName == "" {
		bad = append(bad, fmt.Sprintf("No 'BUILT_MODULE_NAME' directive specified for record #%d.", i))
	}
	if strings.HasSuffix(m.BuiltName, ".o") || strings.HasSuffix(m.BuiltName, ".ko") {
		bad = append(bad, fmt.Sprintf("'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #%d.", i))
	}
	if strings.HasSuffix(m.DestName, ".o") || strings.HasSuffix(m.DestName, ".ko") {
		bad = append(bad, fmt.Sprintf("'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #%d.", i))
	}
	switch l := m.DestLocation; {
	case l == "":
		bad = append(bad, fmt.Sprintf("No 'DEST_MODULE_LOCATION' directive specified for record #%d.", i))
	case !strings.HasPrefix(l, "/kernel") && !strings.HasPrefix(l, "/updates") && !strings.HasPrefix(l, "/extra"):
		bad = append(bad, fmt.Sprintf("Directive 'DEST_MODULE_LOCATION' does not begin with '/kernel', '/updates', or '/extra' in record #%d.", i))
	}
	return bad
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_.+-]+$`)

// unsafe lists names that would make the build read or write outside its
// directories (DKMS builds them into paths, unchecked).
func (c *Conf) unsafe() []string {
	var bad []string
	for what, s := range map[string]string{"PACKAGE_NAME": c.PackageName, "PACKAGE_VERSION": c.PackageVersion} {
		if s != "" && (!safeName.MatchString(s) || s == "." || s == "..") {
			bad = append(bad, fmt.Sprintf("%s=%q is not a plain name (it names directories of the build).", what, s))
		}
	}
	for i, m := range c.Modules {
		for what, s := range map[string]string{"BUILT_MODULE_NAME": m.BuiltName, "DEST_MODULE_NAME": m.DestName} {
			if s != "" && (strings.Contains(s, "/") || s == "." || s == "..") {
				bad = append(bad, fmt.Sprintf("%s[%d]=%q must be a file name.", what, i, s))
			}
		}
		if l := strings.TrimSuffix(m.BuiltLocation, "/"); l != "" && !filepath.IsLocal(l) {
			bad = append(bad, fmt.Sprintf("BUILT_MODULE_LOCATION[%d]=%q must be relative to the build directory.", i, m.BuiltLocation))
		}
	}
	return bad
}

// excluded says which BUILD_EXCLUSIVE_* directives do not match.
func (s *sourced) excluded(kernelver string) string {
	var why []string
	if k := s.scalar("BUILD_EXCLUSIVE_KERNEL"); k != "" && !s.matched("BUILD_EXCLUSIVE_KERNEL", 0) {
		why = append(why, fmt.Sprintf("BUILD_EXCLUSIVE_KERNEL=%q does not match %s", k, kernelver))
	}
	if k := s.scalar("BUILD_EXCLUSIVE_KERNEL_MIN"); k != "" && Ver(kernelver) < Ver(k) {
		why = append(why, fmt.Sprintf("BUILD_EXCLUSIVE_KERNEL_MIN=%q is newer than %s", k, kernelver))
	}
	if k := s.scalar("BUILD_EXCLUSIVE_KERNEL_MAX"); k != "" && Ver(kernelver) > Ver(k) {
		why = append(why, fmt.Sprintf("BUILD_EXCLUSIVE_KERNEL_MAX=%q is older than %s", k, kernelver))
	}
	if a := s.scalar("BUILD_EXCLUSIVE_ARCH"); a != "" && !s.matched("BUILD_EXCLUSIVE_ARCH", 0) {
		why = append(why, fmt.Sprintf("BUILD_EXCLUSIVE_ARCH=%q does not match the arch", a))
	}
	for _, k := range s.unmet {
		if n, neg := strings.CutPrefix(k, "!"); neg {
			why = append(why, fmt.Sprintf("BUILD_EXCLUSIVE_CONFIG %s: %s is set", k, n))
		} else {
			why = append(why, fmt.Sprintf("BUILD_EXCLUSIVE_CONFIG %s: it is not set to y or m", k))
		}
	}
	return strings.Join(why, "; ")
}

func (s *sourced) notes() []string {
	var out []string
	for _, n := range []string{"BUILD_EXCLUSIVE_KERNEL_MIN", "BUILD_EXCLUSIVE_KERNEL_MAX"} {
		if v := s.scalar(n); v != "" {
			out = append(out, fmt.Sprintf("%s=%q is honoured as DKMS 3.0.11 and later do (DKMS 3.0.10 ignores it)", n, v))
		}
	}
	for _, n := range []string{"REMAKE_INITRD", "MODULES_CONF", "MODULES_CONF_OBSOLETES", "MODULES_CONF_ALIAS_TYPE", "MODULES_CONF_OBSOLETE_ONLY"} {
		if s.count(n) > 0 {
			out = append(out, "Deprecated feature: "+n)
		}
	}
	return out
}

// Ver is DKMS's version key: every run of one or two digits padded to
// three, blanks removed, so that versions compare as strings
// (6.12.118-x > 6.9).
func Ver(s string) string {
	var b strings.Builder
	run := 0
	flush := func(digits string) {
		if len(digits) > 0 && len(digits) < 3 {
			b.WriteString(strings.Repeat("0", 3-len(digits)))
		}
		b.WriteString(digits)
	}
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] >= '0' && s[i] <= '9' {
			run++
			continue
		}
		flush(s[i-run : i])
		run = 0
		if i < len(s) && s[i] != ' ' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// ErrBadConf is wrapped by ReadConf's error for a dkms.conf that DKMS
// refuses ("Bad conf file").
var ErrBadConf = errors.New("bad conf file")
