package kbuild

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/wsl-modules/wsl-modules-action/internal/jobserver"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"

	"github.com/wsl-modules/wsl-modules-action/internal/archive"
	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/devel"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/kmodule"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modtree"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// CacheFormat is the version of the kernel cache entry layout; it is part
// of the cache key. Format 2 records a content digest in meta.json.
const CacheFormat = 2

// metaFile is an entry's record.
const metaFile = "meta.json"

// KBuildUser and KBuildHost are the fixed KBUILD_BUILD_USER/HOST values.
const (
	KBuildUser = "wsl-modules"
	KBuildHost = "wsl-modules-action"
)

// TimestampLayout is the format of KBUILD_BUILD_TIMESTAMP (as date(1)).
const TimestampLayout = "Mon Jan _2 15:04:05 MST 2006"

// KernelOptions select the kernel to build.
type KernelOptions struct {
	// Source is a kernel source directory or tarball (.tar.gz, .tar.xz,
	// .tar.zst). A directory is never written to (the build uses O=).
	Source string
	// SourceInfo, if set, describes the source for the manifest; when it
	// carries a Commit or SHA256 that value identifies the source in the
	// cache key instead of hashing the tree.
	SourceInfo *manifest.Source
	// ConfigFile overrides the tree's config (Microsoft/config-wsl or
	// arch/arm64/configs/config-wsl-arm64).
	ConfigFile string
	// configName is how messages name ConfigFile when it is a temporary
	// copy (the config a stock kernel embeds); "" for its path.
	configName string
	// Fragment holds CONFIG_X=m lines (may be nil).
	Fragment *kconfig.Fragment
	// Arch is x86_64 (default) or arm64.
	Arch string
	// CacheDir holds kernel cache entries under kernel/<key>/. Required.
	CacheDir string
	// Jobs is the number of parallel compile jobs (default: all cores).
	Jobs int
	// Timestamp sets KBUILD_BUILD_TIMESTAMP (e.g. the tag's commit date).
	// Zero means the newest modification time of the top-level Makefile,
	// which for a tarball is the commit date.
	Timestamp time.Time
	// HostArch overrides the host architecture (runtime.GOARCH style
	// "amd64"/"arm64"), for tests of cross compilation.
	HostArch string
	// Progress reports long steps (may be nil).
	Progress *progress.Reporter
	// Log receives the full output of every kernel make (may be nil).
	Log io.Writer
}

// Kernel is a built kernel: a kernel cache entry.
type Kernel struct {
	// Dir is the cache entry directory.
	Dir string
	// Meta is the entry's meta.json.
	Meta KernelMeta
	// CacheHit is set when the entry existed before this run.
	CacheHit bool

	stock stockTree
}

// KernelMeta is meta.json of a kernel cache entry.
type KernelMeta struct {
	Format         int             `json:"format"`
	Key            string          `json:"key"`
	Release        string          `json:"release"`
	Arch           string          `json:"arch"`
	ImageFile      string          `json:"image_file"`
	Vermagic       string          `json:"vermagic"`
	Compiler       string          `json:"compiler"`
	Source         manifest.Source `json:"source"`
	ConfigSHA256   string          `json:"config_sha256"`
	FragmentSHA256 string          `json:"fragment_sha256,omitempty"`
	BuildTimestamp string          `json:"build_timestamp"`
	// ConfigChanges are differences between the input config and the
	// olddefconfig result (without the fragment): warnings.
	ConfigChanges []string `json:"config_changes,omitempty"`
	// FragmentNotes are the extra options the fragment enabled.
	FragmentNotes []string `json:"fragment_notes,omitempty"`
	// Mode is manifest.ModeStock for an entry made from Microsoft's
	// kernel and modules (PrepareStock), "" for a kernel built here.
	Mode string `json:"mode,omitempty"`
	// Stock describes Microsoft's files of a stock entry.
	Stock *manifest.Stock `json:"stock,omitempty"`
	// Signing is the config's module signing ("" none, see
	// manifest.Kernel.Signing).
	Signing string `json:"signing,omitempty"`
	// ContentSHA256 is the digest (digest.Tree) of the entry without
	// meta.json, checked on every cache hit: build code that ran since
	// may have tampered with it.
	ContentSHA256 string `json:"content_sha256,omitempty"`
	// Bytes is the entry size; BuildSeconds the kernel build's wall time.
	Bytes        int64   `json:"bytes"`
	BuildSeconds float64 `json:"build_seconds"`
	// BuildSteps is the number of kbuild steps of the long make.
	BuildSteps int64  `json:"build_steps,omitempty"`
	Created    string `json:"created"`
}

// Paths inside a kernel cache entry.

// Image is the kernel image (bzImage or Image).
func (k *Kernel) Image() string { return filepath.Join(k.Dir, k.Meta.ImageFile) }

// ModulesRoot is the INSTALL_MOD_PATH root (holding lib/modules/<release>).
func (k *Kernel) ModulesRoot() string { return filepath.Join(k.Dir, "modules") }

// ModulesDir is lib/modules/<release> of the stock modules.
func (k *Kernel) ModulesDir() string {
	return filepath.Join(k.Dir, "modules", "lib", "modules", k.Meta.Release)
}

// Symvers is the kernel's Module.symvers.
func (k *Kernel) Symvers() string { return filepath.Join(k.Dir, "Module.symvers") }

// SystemMap is System.map.
func (k *Kernel) SystemMap() string { return filepath.Join(k.Dir, "System.map") }

// Config is the final .config.
func (k *Kernel) Config() string { return filepath.Join(k.Dir, "config") }

// DevelDir is the tree to build external modules against
// (make -C DevelDir M=...).
func (k *Kernel) DevelDir() string { return filepath.Join(k.Dir, "kernel-devel") }

// TargetDevelDir is the kernel-devel tree whose host programs run on the
// target architecture: the one to ship in the image. It differs from
// DevelDir only for cross builds.
func (k *Kernel) TargetDevelDir() string {
	t := filepath.Join(k.Dir, "kernel-devel-target")
	if _, err := os.Stat(t); err == nil {
		return t
	}
	return k.DevelDir()
}

// HeadersDir is the UAPI headers tree (make headers_install).
func (k *Kernel) HeadersDir() string { return filepath.Join(k.Dir, "headers") }

// LogFile is the kernel build log kept with the entry.
func (k *Kernel) LogFile() string { return filepath.Join(k.Dir, "kernel.log") }

// OpenKernel opens an existing cache entry directory.
func OpenKernel(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	k := &Kernel{Dir: dir}
	if err := json.Unmarshal(b, &k.Meta); err != nil {
		return nil, fmt.Errorf("kernel cache: %s: %w", filepath.Join(dir, "meta.json"), err)
	}
	if k.Meta.Format != CacheFormat {
		return nil, fmt.Errorf("kernel cache: %s: format %d, want %d", dir, k.Meta.Format, CacheFormat)
	}
	return k, nil
}

// ErrTampered is wrapped by Verify's error when an entry's content does
// not match the digest recorded when it was made.
var ErrTampered = errors.New("kernel cache entry was modified after it was made")

// Verify checks that the entry's files are those recorded in its meta.json
// (ContentSHA256). Build code runs between the stages that use an entry
// (and its cache is restored by later runs), so a changed entry must not
// be trusted.
func (k *Kernel) Verify(ctx context.Context) error {
	if k.Meta.ContentSHA256 == "" {
		return fmt.Errorf("kernel cache: %s: %w (no digest recorded)", k.Dir, ErrTampered)
	}
	d, err := digest.Tree(ctx, k.Dir, metaFile)
	if err != nil {
		return fmt.Errorf("kernel cache: %s: %w", k.Dir, err)
	}
	if d != k.Meta.ContentSHA256 {
		return fmt.Errorf("kernel cache: %s: %w (digest %s, recorded %s)", k.Dir, ErrTampered, d[:16], k.Meta.ContentSHA256[:16])
	}
	return nil
}

// openVerified opens an entry for a cache hit and verifies it; a
// tampered entry is reported loudly and treated as a miss.
func openVerified(ctx context.Context, entry string, p *progress.Reporter) (*Kernel, error) {
	k, err := OpenKernel(entry)
	if err != nil {
		return nil, err
	}
	if err := k.Verify(ctx); err != nil {
		p.Printf("kernel: WARNING: %v; building it again", err)
		return nil, err
	}
	k.CacheHit = true
	return k, nil
}

// Toolchain describes how to invoke the compiler for an arch.
type Toolchain struct {
	// MakeVars are ARCH=/CROSS_COMPILE= arguments (empty for native).
	MakeVars []string
	// CC is the C compiler command; CrossCompile its prefix.
	CC, CrossCompile string
	// SrcArch is the kernel's arch directory (x86, arm64); ImageFile the
	// kernel image target (bzImage, Image); UnameArch is uname -m.
	SrcArch, ImageFile, UnameArch string
}

// ToolchainFor returns the toolchain for building arch on hostArch
// (runtime.GOARCH spelling). arm64 on an amd64 host cross-compiles with
// aarch64-linux-gnu-.
func ToolchainFor(arch, hostArch string) (Toolchain, error) {
	if hostArch == "" {
		hostArch = runtime.GOARCH
	}
	switch arch {
	case "", "x86_64":
		t := Toolchain{CC: "gcc", SrcArch: "x86", ImageFile: "bzImage", UnameArch: "x86_64"}
		if hostArch != "amd64" {
			t.CrossCompile = "x86_64-linux-gnu-"
			t.CC = t.CrossCompile + "gcc"
			t.MakeVars = []string{"ARCH=x86_64", "CROSS_COMPILE=" + t.CrossCompile}
		}
		return t, nil
	case "arm64":
		t := Toolchain{CC: "gcc", SrcArch: "arm64", ImageFile: "Image", UnameArch: "aarch64",
			MakeVars: []string{"ARCH=arm64"}}
		if hostArch != "arm64" {
			t.CrossCompile = "aarch64-linux-gnu-"
			t.CC = t.CrossCompile + "gcc"
			t.MakeVars = append(t.MakeVars, "CROSS_COMPILE="+t.CrossCompile)
		}
		return t, nil
	}
	return Toolchain{}, fmt.Errorf("unknown architecture %q (want x86_64 or arm64)", arch)
}

// CompilerVersion returns the first line of `cc --version`.
func CompilerVersion(ctx context.Context, cc string) (string, error) {
	out, err := exec.CommandContext(ctx, cc, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("compiler %s: %w", cc, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// inTreeConfigs are the config paths tried in a source tree, per arch.
func inTreeConfigs(arch string) []string {
	if arch == "arm64" {
		return []string{"Microsoft/config-wsl-arm64", "arch/arm64/configs/config-wsl-arm64"}
	}
	return []string{"Microsoft/config-wsl", "arch/x86/configs/config-wsl"}
}

// BuildKernel returns the kernel for o, from the cache when an entry with
// the same key exists, otherwise building it (unpack, config, fragment,
// olddefconfig, image + modules, modules_install, kernel-devel, headers)
// and storing it. Concurrent callers with the same inputs build it once.
func BuildKernel(ctx context.Context, o KernelOptions) (*Kernel, error) {
	in, err := resolveInputs(ctx, &o, "")
	if err != nil {
		return nil, err
	}
	return cachedEntry(ctx, o, in, func(entry string) (*Kernel, error) {
		return buildKernel(ctx, o, in, entry)
	})
}

// inputs are the resolved inputs of a kernel cache entry.
type inputs struct {
	tc       Toolchain
	src      manifest.Source
	key      string
	compiler string
	isDir    bool
}

// resolveInputs makes o's paths absolute (make runs with -C and O=),
// finds the toolchain and computes the cache key; extra is hashed into
// the key too (stock mode's files).
func resolveInputs(ctx context.Context, o *KernelOptions, extra string) (*inputs, error) {
	if o.CacheDir == "" {
		return nil, errors.New("kernel: no cache directory")
	}
	for _, p := range []*string{&o.CacheDir, &o.Source, &o.ConfigFile} {
		if *p == "" {
			continue
		}
		a, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
		*p = a
	}
	if o.Arch == "" {
		o.Arch = "x86_64"
	}
	in := &inputs{}
	var err error
	if in.tc, err = ToolchainFor(o.Arch, o.HostArch); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	st, err := os.Stat(o.Source)
	if err != nil {
		return nil, fmt.Errorf("kernel: source: %w", err)
	}
	in.isDir = st.IsDir()
	if in.compiler, err = CompilerVersion(ctx, in.tc.CC); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	done := o.Progress.Step("kernel: cache key (hashing %s)", o.Source)
	in.src, in.key, err = cacheKey(ctx, *o, in.isDir, in.compiler, extra)
	done()
	return in, err
}

// cachedEntry returns the cache entry of in.key, making it with build
// (given the entry path) under the entry's lock when it does not exist.
func cachedEntry(ctx context.Context, o KernelOptions, in *inputs, build func(entry string) (*Kernel, error)) (*Kernel, error) {
	kdir := filepath.Join(o.CacheDir, "kernel")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	key := in.key
	entry := filepath.Join(kdir, key)
	if k, err := openVerified(ctx, entry, o.Progress); err == nil {
		o.Progress.Printf("kernel: cache hit %s (%s, %s)", key[:16], k.Meta.Release, progress.Bytes(k.Meta.Bytes))
		return k, nil
	}
	unlock, err := lockFile(ctx, entry+".lock", o.Progress)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if k, err := openVerified(ctx, entry, o.Progress); err == nil { // made by another process meanwhile
		o.Progress.Printf("kernel: cache hit %s after waiting (%s)", key[:16], k.Meta.Release)
		return k, nil
	} else if errors.Is(err, ErrTampered) {
		if err := os.RemoveAll(entry); err != nil {
			return nil, fmt.Errorf("kernel cache: removing a tampered entry: %w", err)
		}
	}
	o.Progress.Printf("kernel: cache miss %s, building", key[:16])
	return build(entry)
}

// cacheKey hashes the kernel's inputs: source identity, config override,
// fragment, arch, compiler version, timestamp override and cache format.
func cacheKey(ctx context.Context, o KernelOptions, isDir bool, compiler, extra string) (manifest.Source, string, error) {
	var src manifest.Source
	if o.SourceInfo != nil {
		src = *o.SourceInfo
	}
	// The source's identity is its content: the tarball's sha256 (also
	// for a directory unpacked from a tarball whose sha256 is known), else
	// the commit, else a digest of the directory. A commit alone is not
	// preferred: the same bytes then share one entry whether they came
	// from a tag download or a local file.
	ident := ""
	switch {
	case src.SHA256 != "":
		ident = "sha256:" + src.SHA256
	case src.Commit != "":
		ident = "commit:" + src.Commit
	case isDir:
		d, err := digest.Tree(ctx, o.Source)
		if err != nil {
			return src, "", fmt.Errorf("kernel: source: %w", err)
		}
		ident = "tree:" + d
		if src.Kind == "" {
			src.Kind, src.Path = "dir", o.Source
		}
	default:
		d, err := digest.File(o.Source)
		if err != nil {
			return src, "", fmt.Errorf("kernel: source: %w", err)
		}
		ident = "sha256:" + d
		if src.Kind == "" {
			src.Kind, src.Path = "tarball", filepath.Base(o.Source)
		}
		if src.SHA256 == "" {
			src.SHA256 = d
		}
	}
	h := sha256.New()
	fmt.Fprintf(h, "format %d\nsource %s\narch %s\ncompiler %s\n", CacheFormat, ident, o.Arch, compiler)
	if tc, err := ToolchainFor(o.Arch, o.HostArch); err == nil && tc.CrossCompile != "" {
		// Cross builds also hold kernel-devel-target (host programs
		// rebuilt for the target); entries from before it are not reused.
		fmt.Fprintf(h, "devel-target retarget-1\n")
	}
	if o.ConfigFile != "" {
		b, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return src, "", fmt.Errorf("kernel: --config: %w", err)
		}
		fmt.Fprintf(h, "config %x\n", sha256.Sum256(b))
	} else {
		fmt.Fprintf(h, "config in-tree\n")
	}
	if o.Fragment != nil && len(o.Fragment.Lines) > 0 {
		fmt.Fprintf(h, "fragment %x\n", sha256.Sum256([]byte(o.Fragment.Text())))
	}
	if !o.Timestamp.IsZero() {
		fmt.Fprintf(h, "timestamp %d\n", o.Timestamp.Unix())
	}
	if v, err := exec.CommandContext(ctx, "pahole", "--version").Output(); err == nil {
		fmt.Fprintf(h, "pahole %s\n", strings.TrimSpace(string(v)))
	}
	h.Write([]byte(extra))
	return src, hex.EncodeToString(h.Sum(nil)), nil
}

// lockFile takes an exclusive flock on path, waiting (and saying so) while
// another process holds it.
func lockFile(ctx context.Context, path string, p *progress.Reporter) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		done := p.Step("kernel: waiting for another build of the same kernel (%s)", path)
		for {
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				f.Close()
				done()
				return nil, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
		done()
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// kernelBuild carries the state of one kernel build.
type kernelBuild struct {
	o        KernelOptions
	tc       Toolchain
	src, obj string // source tree and object tree
	env      []string
	log      io.Writer
	// inputConfig is the config the build started from (for the step
	// count of earlier builds of the same config).
	inputConfig []byte
}

func (b *kernelBuild) make(ctx context.Context, args ...string) error {
	all := append([]string{"-C", b.src, "O=" + b.obj, "LOCALVERSION="}, b.tc.MakeVars...)
	all = append(all, args...)
	fmt.Fprintf(b.log, "==> make %s\n", strings.Join(all, " "))
	cmd := exec.Command("make", all...)
	cmd.Env = b.env
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := jobserver.RunGroup(ctx, cmd); err != nil {
		return fmt.Errorf("make %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (b *kernelBuild) makeOutput(ctx context.Context, args ...string) (string, error) {
	all := append([]string{"-s", "-C", b.src, "O=" + b.obj, "LOCALVERSION="}, b.tc.MakeVars...)
	all = append(all, args...)
	cmd := exec.CommandContext(ctx, "make", all...)
	cmd.Env = b.env
	cmd.Stderr = b.log
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("make %s: %w", strings.Join(args, " "), err)
	}
	// make -C prints "make[1]: Entering directory" lines with O=; keep the
	// last non-empty line.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// kernelEnv is the environment of kernel makes: the process environment
// without variables that change a kernel build, plus the reproducibility
// settings.
func kernelEnv(ts time.Time) []string {
	env := safeenv.Environ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "LOCALVERSION", "ARCH", "CROSS_COMPILE",
		"KBUILD_BUILD_TIMESTAMP", "KBUILD_BUILD_USER", "KBUILD_BUILD_HOST", "KBUILD_OUTPUT",
		"KCONFIG_CONFIG", "INSTALL_MOD_PATH", "INSTALL_MOD_STRIP", "KBUILD_EXTRA_SYMBOLS",
		"KERNELRELEASE", "KBUILD_EXTMOD", "O", "M", "CC", "HOSTCC", "LANG", "LC_ALL")
	return append(env, "LC_ALL=C",
		"KBUILD_BUILD_TIMESTAMP="+ts.UTC().Format(TimestampLayout),
		"KBUILD_BUILD_USER="+KBuildUser, "KBUILD_BUILD_HOST="+KBuildHost,
		"KBUILD_BUILD_VERSION=1", fmt.Sprintf("SOURCE_DATE_EPOCH=%d", ts.Unix()))
}

// workDir is the work dir (unpacked source, object tree) of an entry,
// named by its key and kept when the build fails, so that a retry (under
// the same lock) continues incrementally; it is removed after success.
func workDir(entry, key string) string { return filepath.Join(filepath.Dir(entry), ".work-"+key) }

// openEntry creates the entry's temporary directory and its kernel.log.
func openEntry(o KernelOptions, entry string) (*atomicfile.Dir, *os.File, io.Writer, error) {
	out, err := atomicfile.CreateDir(entry, false)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kernel cache: %w", err)
	}
	logf, err := os.Create(filepath.Join(out.Tmp, "kernel.log"))
	if err != nil {
		out.Abort()
		return nil, nil, nil, fmt.Errorf("kernel: %w", err)
	}
	var log io.Writer = logf
	if o.Log != nil {
		log = io.MultiWriter(logf, o.Log)
	}
	return out, logf, log, nil
}

// newKernelBuild sets up the source tree (unpacking a tarball into work
// once), the object tree and the reproducible environment.
func newKernelBuild(ctx context.Context, o KernelOptions, in *inputs, work string, log io.Writer) (*kernelBuild, time.Time, error) {
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, time.Time{}, fmt.Errorf("kernel: %w", err)
	}
	b := &kernelBuild{o: o, tc: in.tc, obj: filepath.Join(work, "obj"), log: log}
	var err error
	if in.isDir {
		if b.src, err = filepath.Abs(o.Source); err != nil {
			return nil, time.Time{}, fmt.Errorf("kernel: %w", err)
		}
	} else {
		b.src = filepath.Join(work, "src")
		if _, err := os.Stat(b.src); err != nil {
			done := longStep(o.Progress, 30*time.Second, "kernel: unpacking %s", filepath.Base(o.Source))
			_, err := archive.ExtractFile(ctx, o.Source, b.src, archive.Options{StripComponents: 1})
			done()
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("kernel: %w", err)
			}
		}
	}
	st, err := os.Stat(filepath.Join(b.src, "Makefile"))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("kernel: %s is not a kernel source tree (no top-level Makefile)", o.Source)
	}
	ts := o.Timestamp
	if ts.IsZero() {
		ts = st.ModTime()
	}
	b.env = kernelEnv(ts)
	if err := os.MkdirAll(b.obj, 0o755); err != nil {
		return nil, time.Time{}, fmt.Errorf("kernel: %w", err)
	}
	return b, ts, nil
}

func buildKernel(ctx context.Context, o KernelOptions, in *inputs, entry string) (*Kernel, error) {
	start := time.Now()
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	tc, key := in.tc, in.key
	work := workDir(entry, key)
	success := false
	defer func() {
		if success {
			os.RemoveAll(work)
		}
	}()
	out, logf, log, err := openEntry(o, entry)
	if err != nil {
		return nil, err
	}
	defer out.Abort()
	defer logf.Close()
	b, ts, err := newKernelBuild(ctx, o, in, work, log)
	if err != nil {
		return nil, err
	}
	meta := KernelMeta{Format: CacheFormat, Key: key, Arch: o.Arch, ImageFile: tc.ImageFile,
		Compiler: in.compiler, Source: in.src, BuildTimestamp: ts.UTC().Format(TimestampLayout)}
	_, final, err := b.configure(ctx, &meta)
	if err != nil {
		return nil, err
	}
	release := meta.Release

	done := o.Progress.Step("kernel: make -j%d %s modules (%s)", jobs, tc.ImageFile, release)
	meta.BuildSteps, err = b.countedMake(ctx, release, fmt.Sprintf("-j%d", jobs), tc.ImageFile, "modules")
	done()
	if err != nil {
		return nil, fmt.Errorf("kernel: build failed (log: %s): %w\n%s", filepath.Join(entry, "kernel.log"), err, tailFile(logf.Name(), 15))
	}

	done = o.Progress.Step("kernel: modules_install, headers_install, kernel-devel")
	err = b.install(ctx, out.Tmp, release)
	done()
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if meta.Signing, err = b.keepSigningKey(out.Tmp, final); err != nil {
		return nil, err
	}
	k, err := finishEntry(ctx, out, logf, &meta, final, start)
	if err != nil {
		return nil, err
	}
	success = true
	o.Progress.Printf("kernel: cached %s as %s (%s)", release, entry, progress.Bytes(meta.Bytes))
	return k, nil
}

// finishEntry completes an entry made in out.Tmp: the config's hash, the
// modules' vermagic, sizes, the content digest (checked on every cache
// hit) and meta.json, then commits it.
func finishEntry(ctx context.Context, out *atomicfile.Dir, logf *os.File, meta *KernelMeta, final kconfig.Config, start time.Time) (*Kernel, error) {
	var err error
	meta.ConfigSHA256, err = digest.File(filepath.Join(out.Tmp, "config"))
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	meta.Vermagic, err = kernelVermagic(filepath.Join(out.Tmp, "modules", "lib", "modules", meta.Release), meta.Release, final)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	meta.BuildSeconds = time.Since(start).Seconds()
	meta.Created = time.Now().UTC().Format(time.RFC3339)
	logf.Sync()
	if meta.Bytes, err = DirSize(out.Tmp); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if meta.ContentSHA256, err = digest.Tree(ctx, out.Tmp, metaFile); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(out.Tmp, metaFile), append(mb, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	return &Kernel{Dir: out.Path, Meta: *meta}, nil
}

// install fills the cache entry dir from the object tree.
func (b *kernelBuild) install(ctx context.Context, dir, release string) error {
	if err := b.make(ctx, "modules_install", "INSTALL_MOD_PATH="+filepath.Join(dir, "modules"), "INSTALL_MOD_STRIP=1"); err != nil {
		return err
	}
	mdir := filepath.Join(dir, "modules", "lib", "modules", release)
	for _, l := range []string{"build", "source"} {
		os.Remove(filepath.Join(mdir, l))
	}
	if _, err := os.Stat(filepath.Join(mdir, "modules.order")); err != nil {
		return fmt.Errorf("modules_install wrote no %s/modules.order", mdir)
	}
	if err := b.make(ctx, "headers_install", "INSTALL_HDR_PATH="+filepath.Join(dir, "headers")); err != nil {
		return err
	}
	files := map[string]string{
		filepath.Join("arch", b.tc.SrcArch, "boot", b.tc.ImageFile): b.tc.ImageFile,
		"Module.symvers": "Module.symvers",
		"System.map":     "System.map",
		".config":        "config",
	}
	for from, to := range files {
		if err := atomicfile.CopyFile(filepath.Join(b.obj, from), filepath.Join(dir, to), 0); err != nil {
			return err
		}
	}
	return b.develTrees(ctx, dir)
}

// develTrees makes the entry's kernel-devel tree from the object tree,
// and for cross builds kernel-devel-target.
func (b *kernelBuild) develTrees(ctx context.Context, dir string) error {
	develDir := filepath.Join(dir, "kernel-devel")
	if err := b.installDevel(ctx, develDir); err != nil {
		return fmt.Errorf("kernel-devel: %w", err)
	}
	if b.tc.CrossCompile != "" {
		// kernel-devel's host programs run on this machine (module builds
		// here use it); the tree shipped in the image must run on the
		// target, so its host programs are rebuilt with the cross compiler.
		fmt.Fprintf(b.log, "==> retarget kernel-devel for %s\n", b.o.Arch)
		if _, err := devel.Retarget(ctx, develDir, filepath.Join(dir, "kernel-devel-target"),
			devel.RetargetOptions{Arch: b.o.Arch, CrossCompile: b.tc.CrossCompile, Jobs: b.o.Jobs, Log: b.log}); err != nil {
			return fmt.Errorf("kernel-devel for %s: %w", b.o.Arch, err)
		}
	}
	return nil
}

// installDevel makes the external-module build tree, with the kernel's own
// scripts/package/install-extmod-build when the tree has it, otherwise
// with an equivalent copy (CopyDevel). The config goes in as .config too,
// as Debian's linux-headers packages do (dkms.conf files source it).
func (b *kernelBuild) installDevel(ctx context.Context, devel string) error {
	script := filepath.Join(b.src, "scripts", "package", "install-extmod-build")
	if _, err := os.Stat(script); err == nil {
		fmt.Fprintf(b.log, "==> %s %s\n", script, devel)
		cmd := exec.CommandContext(ctx, "sh", script, devel)
		cmd.Dir = b.obj
		// CC and HOSTCC are both the host compiler: the tree's host
		// programs (modpost, fixdep, ...) must run on the build host.
		cmd.Env = append(b.env, "srctree="+b.src, "SRCARCH="+b.tc.SrcArch, "CC=gcc", "HOSTCC=gcc", "MAKE=make")
		cmd.Stdout, cmd.Stderr = b.log, b.log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("install-extmod-build: %w", err)
		}
	} else if err := CopyDevel(b.src, b.obj, b.tc.SrcArch, devel); err != nil {
		return err
	}
	return atomicfile.CopyFile(filepath.Join(b.obj, ".config"), filepath.Join(devel, ".config"), 0)
}

// kernelVermagic returns the vermagic modules of this kernel carry: that
// of a stock module when there is one, else computed from the config as
// include/linux/vermagic.h does.
func kernelVermagic(mdir, release string, cfg kconfig.Config) (string, error) {
	paths, err := modtree.ListModules(mdir)
	if err != nil {
		return "", err
	}
	if len(paths) > 0 {
		m, err := kmodule.ReadFile(filepath.Join(mdir, paths[0]))
		if err != nil {
			return "", err
		}
		return m.Vermagic(), nil
	}
	v := release + " "
	on := func(n string) bool { return cfg.Get(n) == "y" }
	if on("CONFIG_SMP") {
		v += "SMP "
	}
	switch {
	case on("CONFIG_PREEMPT_BUILD"):
		v += "preempt "
	case on("CONFIG_PREEMPT_RT"):
		v += "preempt_rt "
	}
	if on("CONFIG_MODULE_UNLOAD") {
		v += "mod_unload "
	}
	if on("CONFIG_MODVERSIONS") {
		v += "modversions "
	}
	return v, nil
}

// tailFile returns the last n lines of a file, indented.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return "    " + strings.Join(lines, "\n    ")
}

// configure writes the config into the object tree, runs olddefconfig,
// applies and checks the fragment and checks the kernel release. It fills
// meta's config fields and Release and returns the config after
// olddefconfig (base) and after the fragment (final; the same without
// one).
func (b *kernelBuild) configure(ctx context.Context, meta *KernelMeta) (base, final kconfig.Config, err error) {
	o := b.o
	cfgPath, input, err := b.readInputConfig()
	if err != nil {
		return nil, nil, err
	}
	dotConfig := filepath.Join(b.obj, ".config")
	if err := os.WriteFile(dotConfig, b.inputConfig, 0o644); err != nil {
		return nil, nil, fmt.Errorf("kernel: %w", err)
	}
	done := o.Progress.Step("kernel: make olddefconfig")
	err = b.make(ctx, "olddefconfig")
	done()
	if err != nil {
		return nil, nil, fmt.Errorf("kernel: %w", err)
	}
	if base, err = kconfig.ReadConfig(dotConfig); err != nil {
		return nil, nil, fmt.Errorf("kernel: %w", err)
	}
	if base.Get("CONFIG_MODULES") != "y" {
		return nil, nil, fmt.Errorf("kernel: config %s: CONFIG_MODULES is not set; loadable modules need it", cfgPath)
	}
	for _, ch := range kconfig.DiffConfig(input, base) {
		if ch.Name == "CONFIG_CC_VERSION_TEXT" || strings.HasPrefix(ch.Name, "CONFIG_GCC_VERSION") ||
			strings.HasPrefix(ch.Name, "CONFIG_AS_VERSION") || strings.HasPrefix(ch.Name, "CONFIG_LD_VERSION") ||
			strings.HasPrefix(ch.Name, "CONFIG_PAHOLE_VERSION") {
			meta.ConfigChanges = append(meta.ConfigChanges, "toolchain: "+ch.String())
			continue
		}
		meta.ConfigChanges = append(meta.ConfigChanges, ch.String())
	}
	for _, c := range meta.ConfigChanges {
		o.Progress.Printf("kernel: warning: olddefconfig changed the config: %s", c)
	}
	if err := b.applyFragment(ctx, dotConfig, base, meta); err != nil {
		return nil, nil, err
	}
	if final, err = kconfig.ReadConfig(dotConfig); err != nil {
		return nil, nil, fmt.Errorf("kernel: %w", err)
	}
	if meta.Release, err = b.checkRelease(ctx, final); err != nil {
		return nil, nil, err
	}
	return base, final, nil
}

// readInputConfig reads the config to start from (o.ConfigFile, else
// the tree's own for the arch) into b.inputConfig and parses it; it
// returns the config's name for messages.
func (b *kernelBuild) readInputConfig() (string, kconfig.Config, error) {
	o := b.o
	cfgPath := o.ConfigFile
	if cfgPath == "" {
		for _, c := range inTreeConfigs(o.Arch) {
			if _, err := os.Stat(filepath.Join(b.src, c)); err == nil {
				cfgPath = filepath.Join(b.src, c)
				break
			}
		}
		if cfgPath == "" {
			return "", nil, fmt.Errorf("kernel: no kernel config in %s: none of %s exists; pass --config FILE",
				o.Source, strings.Join(inTreeConfigs(o.Arch), ", "))
		}
	}
	inCfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return "", nil, fmt.Errorf("kernel: config: %w", err)
	}
	b.inputConfig = inCfg
	name := cfgPath
	if o.configName != "" && cfgPath == o.ConfigFile {
		name = o.configName
	}
	input, err := kconfig.ParseConfig(strings.NewReader(string(inCfg)))
	if err != nil {
		return "", nil, fmt.Errorf("kernel: config %s: %w", name, err)
	}
	return name, input, nil
}

// applyFragment appends the config fragment (if any) to dotConfig, runs
// olddefconfig again and checks the fragment's rules against base (the
// config without it), recording its notes and digest in meta.
func (b *kernelBuild) applyFragment(ctx context.Context, dotConfig string, base kconfig.Config, meta *KernelMeta) error {
	f := b.o.Fragment
	if f == nil || len(f.Lines) == 0 {
		return nil
	}
	if err := f.CheckBase(base); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	cf, err := os.OpenFile(dotConfig, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	_, err = io.WriteString(cf, f.Text())
	if cerr := cf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	done := b.o.Progress.Step("kernel: make olddefconfig (with config-fragment)")
	err = b.make(ctx, "olddefconfig")
	done()
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	after, err := kconfig.ReadConfig(dotConfig)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	notes, err := f.CheckResult(base, after)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	meta.FragmentNotes = notes
	meta.FragmentSHA256 = sha256Hex([]byte(f.Text()))
	return nil
}

// checkRelease returns the release the configured tree builds (make
// kernelrelease), which must be kernelversion plus CONFIG_LOCALVERSION
// and nothing else: LOCALVERSION= (empty, present) keeps setlocalversion
// from appending "+".
func (b *kernelBuild) checkRelease(ctx context.Context, final kconfig.Config) (string, error) {
	if err := b.make(ctx, "syncconfig"); err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	release, err := b.makeOutput(ctx, "kernelrelease")
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	version, err := b.makeOutput(ctx, "kernelversion")
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	if want := version + final.Unquoted("CONFIG_LOCALVERSION"); release != want || strings.Contains(release, "+") {
		return "", fmt.Errorf("kernel: make kernelrelease says %q, want %q (kernelversion + CONFIG_LOCALVERSION); a stray suffix would not match the stock kernel", release, want)
	}
	return release, nil
}

// ConfigCheck is what CheckConfig found.
type ConfigCheck struct {
	// Meta holds the fields the configuration steps fill: Release,
	// ConfigChanges, FragmentNotes and FragmentSHA256.
	Meta *KernelMeta
	// Base is the config after olddefconfig, before the fragment; Final
	// is the config the kernel would build with (equal to Base when there
	// is no fragment).
	Base, Final kconfig.Config
}

// CheckConfig runs the configuration steps of a kernel build (config
// selection, olddefconfig, fragment checks, release check) in a scratch
// object directory under workDir, without building anything. o.Source must
// be a directory.
func CheckConfig(ctx context.Context, o KernelOptions, workDir string) (*ConfigCheck, error) {
	if o.Arch == "" {
		o.Arch = "x86_64"
	}
	tc, err := ToolchainFor(o.Arch, o.HostArch)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	src, err := filepath.Abs(o.Source)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		return nil, fmt.Errorf("kernel: %s is not a kernel source tree (no top-level Makefile)", o.Source)
	}
	obj, err := os.MkdirTemp(workDir, "obj-")
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer os.RemoveAll(obj)
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	ts := o.Timestamp
	if ts.IsZero() {
		ts = time.Unix(0, 0)
	}
	b := &kernelBuild{o: o, tc: tc, src: src, obj: obj, log: log, env: kernelEnv(ts)}
	meta := &KernelMeta{Format: CacheFormat, Arch: o.Arch, ImageFile: tc.ImageFile}
	base, final, err := b.configure(ctx, meta)
	if err != nil {
		return nil, err
	}
	return &ConfigCheck{Meta: meta, Base: base, Final: final}, nil
}
