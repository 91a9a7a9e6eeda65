package merge

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/modtree"

	"github.com/wsl-modules/wsl-modules-action/internal/pack"

	"github.com/klauspost/compress/zstd"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/buildtest"
	"github.com/wsl-modules/wsl-modules-action/internal/digest"
	"github.com/wsl-modules/wsl-modules-action/internal/image"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
	"github.com/wsl-modules/wsl-modules-action/internal/modbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/progress"
	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// vhdOf makes what WSL ships: an mke2fs-made ext4 (hashed directories,
// metadata_csum) of dir, converted by qemu-img to a VHD of subformat
// fixed or dynamic.
func vhdOf(t *testing.T, dir, sub string) string {
	t.Helper()
	size := testenv.ImageSize(dir)
	tmp := t.TempDir()
	raw := filepath.Join(tmp, "base.ext4")
	testenv.Run(t, "mke2fs", "-q", "-t", "ext4", "-O", "metadata_csum,dir_index", "-E", "root_owner=0:0", "-d", dir, raw,
		fmt.Sprintf("%dk", (size*5/4+(32<<20))>>10))
	vhd := filepath.Join(tmp, "modules-"+sub+".vhd")
	testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat="+sub, raw, vhd)
	return vhd
}

// unpackImage checks an output image with qemu-img check and e2fsck -fn
// and unpacks it with debugfs rdump (independent of our reader) into a
// root holding lib/modules/<release> (flat) or <release>/modules (nested).
func unpackImage(t *testing.T, vhdx string) string {
	t.Helper()
	testenv.Run(t, "qemu-img", "check", "-f", "vhdx", vhdx)
	tmp := t.TempDir()
	raw := filepath.Join(tmp, "out.raw")
	testenv.Run(t, "qemu-img", "convert", "-f", "vhdx", "-O", "raw", vhdx, raw)
	testenv.Run(t, "e2fsck", "-fn", raw)
	dest := filepath.Join(tmp, "fs")
	os.Mkdir(dest, 0o755)
	testenv.Run(t, "debugfs", "-R", "rdump / "+dest, raw)
	return dest
}

// showDepends runs kmod's modprobe --show-depends on a module root.
func showDepends(t *testing.T, root, release, module string) []string {
	t.Helper()
	out := testenv.Run(t, "modprobe", "-d", root, "-S", release, "--show-depends", module)
	var mods []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "insmod" {
			rel, _ := filepath.Rel(filepath.Join(root, "lib", "modules", release), f[1])
			mods = append(mods, rel)
		}
	}
	return mods
}

// sameAsKmod re-runs kmod's depmod on a copy of mdir and checks that its
// indexes equal the ones merge wrote.
func sameAsKmod(t *testing.T, mdir, release string) {
	t.Helper()
	root := t.TempDir()
	copyDir := filepath.Join(root, "lib", "modules", release)
	os.MkdirAll(filepath.Dir(copyDir), 0o755)
	testenv.Run(t, "cp", "-a", mdir, copyDir)
	testenv.Run(t, "depmod", "-b", root, release)
	for _, f := range []string{"modules.dep", "modules.dep.bin", "modules.symbols", "modules.symbols.bin", "modules.alias", "modules.alias.bin", "modules.softdep", "modules.devname"} {
		ours, err1 := os.ReadFile(filepath.Join(mdir, f))
		theirs, err2 := os.ReadFile(filepath.Join(copyDir, f))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", f, err1, err2)
		}
		if !bytes.Equal(ours, theirs) {
			t.Errorf("%s differs from kmod depmod's (%d vs %d bytes)", f, len(ours), len(theirs))
		}
	}
}

// builtPacks builds three out-of-tree modules with our build against the
// test kernel (provider, consumer which needs provider's symbol, and
// Debian's v4l2loopback DKMS package, which needs the stock videodev) and
// turns the build output into one pack per module with FromBuild. The
// packs are cached in testenv.CacheDir(), keyed by the kernel and the
// module sources.
func builtPacks(t *testing.T) (k *kbuild.Kernel, packs map[string]string) {
	t.Helper()
	k = buildtest.TestKernel(t)
	ctx := context.Background()
	v4lSrc := testenv.DKMSSource(t, "v4l2loopback")
	h := sha256.New()
	fmt.Fprintf(h, "pack-test v1\n%s\n", k.Meta.Key)
	for _, d := range []string{buildtest.Testdata("modules"), buildtest.Testdata("dkms"), v4lSrc} {
		dg, err := digest.Tree(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(h, dg)
	}
	dir := filepath.Join(testenv.CacheDir(), "pack-test", hex.EncodeToString(h.Sum(nil))[:24])
	names := []string{"consumer", "provider", "v4l2loopback"}
	packs = map[string]string{}
	for _, n := range names {
		packs[n] = filepath.Join(dir, n+pack.Ext)
	}
	if _, err := os.Stat(packs["v4l2loopback"]); err == nil {
		return k, packs
	}
	unlock := testenv.Lock(t, dir+".lock")
	defer unlock()
	if _, err := os.Stat(packs["v4l2loopback"]); err == nil {
		return k, packs
	}

	repo := t.TempDir()
	if err := atomicfile.CopyTree(context.Background(), buildtest.Testdata("modules"), filepath.Join(repo, "modules"), atomicfile.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := buildtest.PrepareV4L2Loopback(v4lSrc, filepath.Join(repo, "v4l2loopback")); err != nil {
		t.Fatal(err)
	}
	yml := "modules:\n  - name: consumer\n    path: modules/consumer\n    make: [ \"KDIR={{.KernelDir}}\" ]\n" +
		"  - name: provider\n    path: modules/provider\n  - name: v4l2loopback\n    path: v4l2loopback\n"
	l := buildtest.ModuleList(t, repo, yml)
	out := filepath.Join(t.TempDir(), "build")
	res, err := modbuild.Run(ctx, modbuild.Options{KernelSource: buildtest.GitHubTarball(t),
		List: l, Out: out, CacheDir: buildtest.CacheDir(), Progress: progress.New(testenv.LogWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	ad, err := atomicfile.CreateDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Abort()
	got, err := pack.FromBuild(out, res.Manifest, nil, ad.Tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("FromBuild made %v", got)
	}
	// Each pack holds exactly the staged module bytes.
	for _, p := range got {
		pk := open(t, p)
		for _, md := range pk.Meta.Modules {
			name := strings.TrimSuffix(filepath.Base(p), pack.Ext)
			staged, err := os.ReadFile(filepath.Join(out, "staging", "lib", "modules", k.Meta.Release, "extra", name, strings.TrimPrefix(md.File, name+"/")))
			if err != nil || !bytes.Equal(staged, pk.Files[md.File]) {
				t.Fatalf("%s: %s differs from the staged module (%v)", p, md.File, err)
			}
		}
		var mod manifest.Module
		for _, m := range res.Manifest.Modules {
			if m.Name == pk.Meta.Name {
				mod = m
			}
		}
		if pk.Meta.KernelRelease != k.Meta.Release || pk.Meta.Arch != "x86_64" || pk.Meta.Modules[0].SrcVersion != mod.SrcVersion {
			t.Fatalf("%s: meta %+v, manifest %+v", p, pk.Meta, mod)
		}
	}
	if err := ad.Commit(); err != nil {
		t.Fatal(err)
	}
	return k, packs
}

func TestMergeBuiltPacksOverStockVHD(t *testing.T) {
	k, packs := builtPacks(t)
	rel := k.Meta.Release
	ctx := context.Background()
	for _, sub := range []string{"fixed", "dynamic"} {
		t.Run(sub, func(t *testing.T) {
			base := vhdOf(t, k.ModulesDir(), sub)
			out := filepath.Join(t.TempDir(), "modules.vhdx")
			o := Options{Base: base, Packs: []string{packs["consumer"], packs["provider"], packs["v4l2loopback"]},
				Out: out, Slack: image.DefaultSlack, Progress: progress.New(testenv.LogWriter(t))}
			if sub == "fixed" {
				o.Symvers = k.Symvers() // every symbol and CRC checked
			}
			res, err := Merge(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Base.Source.Kind != "vhd-"+sub || res.Base.Release != rel || res.Base.Source.ReleaseFrom != "vermagic" || res.Layout != image.LayoutFlat {
				t.Errorf("base %s %s from %s, layout %s", res.Base.Source.Kind, res.Base.Release, res.Base.Source.ReleaseFrom, res.Layout)
			}
			if sub == "fixed" && len(res.Plan.Warnings) != 0 {
				t.Errorf("warnings with Module.symvers: %v", res.Plan.Warnings)
			}
			root := unpackImage(t, out)
			// The unpacked image is the flat module tree; give modprobe a
			// root holding lib/modules/<release>.
			mroot := t.TempDir()
			os.MkdirAll(filepath.Join(mroot, "lib", "modules"), 0o755)
			if err := os.Rename(root, filepath.Join(mroot, "lib", "modules", rel)); err != nil {
				t.Fatal(err)
			}
			mdir := filepath.Join(mroot, "lib", "modules", rel)
			if got := strings.Join(showDepends(t, mroot, rel, "wslt_consumer"), " "); got != "extra/provider/wslt_provider.ko extra/consumer/wslt_consumer.ko" {
				t.Errorf("modprobe --show-depends wslt_consumer: %s", got)
			}
			v4l := showDepends(t, mroot, rel, "v4l2loopback")
			if len(v4l) < 2 || v4l[len(v4l)-1] != "extra/v4l2loopback/v4l2loopback.ko" || !strings.Contains(strings.Join(v4l, " "), "kernel/drivers/media/v4l2-core/videodev.ko") {
				t.Errorf("modprobe --show-depends v4l2loopback: %v", v4l)
			}
			// Stock modules resolve as they do in the stock tree.
			for _, m := range []string{"vfat", "msdos", "isofs", "videodev"} {
				got, want := showDepends(t, mroot, rel, m), showDepends(t, k.ModulesRoot(), rel, m)
				if strings.Join(got, " ") != strings.Join(want, " ") || len(want) == 0 {
					t.Errorf("modprobe --show-depends %s: %v, stock tree: %v", m, got, want)
				}
			}
			sameAsKmod(t, mdir, rel)
			// The record says where each module came from.
			rec, err := pack.ReadRecordDir(mdir)
			if err != nil || rec == nil {
				t.Fatalf("record: %v", err)
			}
			origins := rec.Origins()
			for f, want := range map[string]string{"extra/consumer/wslt_consumer.ko": "consumer", "extra/provider/wslt_provider.ko": "provider", "extra/v4l2loopback/v4l2loopback.ko": "v4l2loopback"} {
				if origins[f].Name != want {
					t.Errorf("record: %s from %q, want %s", f, origins[f].Name, want)
				}
			}
			// Our reader finds the same record in the image.
			fsys, err := image.OpenFS(out)
			if err != nil {
				t.Fatal(err)
			}
			rec2, prefix, err := pack.FindRecord(fsys, out)
			fsys.Close()
			if err != nil || prefix != "" || !bytes.Equal(rec2.Encode(), rec.Encode()) {
				t.Errorf("FindRecord: %v prefix %q", err, prefix)
			}

			// Same inputs in another order: the same bytes.
			out2 := filepath.Join(t.TempDir(), "modules.vhdx")
			o.Packs = []string{packs["v4l2loopback"], packs["provider"], packs["consumer"]}
			o.Out = out2
			if _, err := Merge(ctx, o); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(out)
			b, _ := os.ReadFile(out2)
			if !bytes.Equal(a, b) {
				t.Errorf("merge is not reproducible under pack order")
			}
		})
	}
}

// patchedKo writes a copy of a pack's module after applying fn to it.
func patchedKo(t *testing.T, pack, file string, fn func([]byte)) string {
	t.Helper()
	pk := open(t, pack)
	data := append([]byte(nil), pk.Files[file]...)
	if data == nil {
		t.Fatalf("%s has no %s", pack, file)
	}
	fn(data)
	p := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// setVersionCRC flips the __versions CRC of sym in a module.
func setVersionCRC(t *testing.T, data []byte, sym string) {
	t.Helper()
	i := bytes.Index(data, append([]byte(sym), 0))
	for i >= 0 && (i < 8 || (i-8)%8 != 0) {
		j := bytes.Index(data[i+1:], append([]byte(sym), 0))
		if j < 0 {
			i = -1
			break
		}
		i += 1 + j
	}
	if i < 0 {
		t.Fatalf("no __versions entry for %s", sym)
	}
	data[i-8] ^= 0xff
}

// TestMergeRefusesBadInput runs each bad input of the issue through Merge
// over the test kernel's module tree: each is refused with a message naming
// pack, module and symbol, and no output (or temporary file) is left.
func TestMergeRefusesBadInput(t *testing.T) {
	k, packs := builtPacks(t)
	rel := k.Meta.Release
	ctx := context.Background()
	prov, cons := packs["provider"], packs["consumer"]
	mk := func(name, release string, mods map[string]string) string {
		return mkPack(t, name, release, mods)
	}
	provKo := patchedKo(t, prov, "provider/wslt_provider.ko", func([]byte) {})
	badVermagic := patchedKo(t, prov, "provider/wslt_provider.ko", func(b []byte) {
		i := bytes.Index(b, []byte("vermagic="+rel))
		if i < 0 {
			t.Fatal("no vermagic")
		}
		copy(b[i+len("vermagic="+rel)-1:], "9")
	})
	badCRC := patchedKo(t, cons, "consumer/wslt_consumer.ko", func(b []byte) { setVersionCRC(t, b, "wslt_provider_add") })
	badKernelCRC := patchedKo(t, cons, "consumer/wslt_consumer.ko", func(b []byte) { setVersionCRC(t, b, "_printk") })
	// The release with its last character changed, as badVermagic has it.
	wrongRel := rel[:len(rel)-1] + "9"
	good, _ := os.ReadFile(prov)
	truncated := filepath.Join(t.TempDir(), "truncated.tar.zst")
	os.WriteFile(truncated, good[:len(good)/2], 0o644)

	cases := []struct {
		name    string
		packs   []string
		symvers bool
		want    string
	}{
		{"other-release", []string{mk("provider", rel+"-other", map[string]string{"wslt_provider.ko": provKo})}, false,
			"pack provider: built for kernel release " + rel + "-other, base is " + rel},
		{"vermagic", []string{mk("provider", rel, map[string]string{"wslt_provider.ko": badVermagic})}, false,
			`pack provider: extra/provider/wslt_provider.ko: vermagic "` + wrongRel + ` mod_unload modversions ", want "` + rel},
		{"unresolved", []string{cons}, true,
			"pack consumer: extra/consumer/wslt_consumer.ko needs unknown symbol wslt_provider_add"},
		{"crc-mismatch", []string{prov, mk("consumer", rel, map[string]string{"wslt_consumer.ko": badCRC})}, false,
			"pack consumer: extra/consumer/wslt_consumer.ko disagrees about version of symbol wslt_provider_add"},
		{"crc-mismatch-kernel", []string{prov, mk("consumer", rel, map[string]string{"wslt_consumer.ko": badKernelCRC})}, true,
			"pack consumer: extra/consumer/wslt_consumer.ko disagrees about version of symbol _printk"},
		{"crc-mismatch-kernel-no-symvers", []string{prov, mk("consumer", rel, map[string]string{"wslt_consumer.ko": badKernelCRC})}, false,
			"pack consumer: extra/consumer/wslt_consumer.ko disagrees about version of symbol _printk (module has"},
		{"same-module", []string{prov, mk("other", rel, map[string]string{"sub/wslt_provider.ko": provKo})}, false,
			"module wslt_provider is provided by several packs: other (other/sub/wslt_provider.ko), provider (provider/wslt_provider.ko); choose one with --prefer PACK"},
		{"same-pack-twice", []string{prov, prov}, false, "pack provider: given twice"},
		{"corrupt", []string{prov, truncated}, false, truncated + ": "},
		{"traversal", []string{traversalPack(t)}, false, `entry "../evil.ko": path traversal`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "modules.vhdx")
			o := Options{Base: k.ModulesRoot(), Packs: c.packs, Out: out}
			if c.symvers {
				o.Symvers = k.Symvers()
			}
			_, err := Merge(ctx, o)
			if err == nil {
				t.Fatal("merge accepted bad input")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, c.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
	if !strings.Contains(fmt.Sprint(cases[8]), "corrupt") {
		t.Fatal("case order changed")
	}

	// Without Module.symvers an unknown symbol cannot be told from a kernel
	// symbol no stock module uses: it is a warning, not an error.
	res, err := Merge(ctx, Options{Base: k.ModulesRoot(), Packs: []string{cons}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan.Warnings) != 1 || !strings.Contains(res.Plan.Warnings[0], "pack consumer: extra/consumer/wslt_consumer.ko needs unknown symbol wslt_provider_add") {
		t.Errorf("warnings: %q", res.Plan.Warnings)
	}
	// --prefer settles the duplicate.
	res, err = Merge(ctx, Options{Base: k.ModulesRoot(), Packs: []string{prov, mk("other", rel, map[string]string{"sub/wslt_provider.ko": provKo})}, Prefer: []string{"other"}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan.Add) != 1 || res.Plan.Add[0].Dest != "extra/other/sub/wslt_provider.ko" || len(res.Plan.Dropped) != 1 || res.Plan.Dropped[0].Pack != "provider" {
		t.Errorf("prefer: add %+v dropped %+v", res.Plan.Add, res.Plan.Dropped)
	}
}

// traversalPack is a zstd tar with a valid-looking pack.json and an entry
// escaping the tree.
func traversalPack(t *testing.T) string {
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range []struct{ n, body string }{{"pack.json", `{"format":1,"name":"evil","kernel_release":"x","arch":"x86_64","modules":[]}`}, {"../evil.ko", "x"}} {
		tw.WriteHeader(&tar.Header{Name: e.n, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	p := filepath.Join(t.TempDir(), "evil.tar.zst")
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

// debianBaseWithout hard-links the Debian module tree into a new directory
// without the given module files (relative paths).
func debianBaseWithout(t *testing.T, drop ...string) (mdir, release string) {
	t.Helper()
	root, rel := testenv.DebianModules(t)
	src := filepath.Join(root, "lib", "modules", rel)
	mdir = filepath.Join(t.TempDir(), rel)
	testenv.Run(t, "cp", "-al", src, mdir)
	for _, d := range drop {
		if err := os.Remove(filepath.Join(mdir, d)); err != nil {
			t.Fatal(err)
		}
	}
	// Dangling build/source symlinks of the package would stay dangling.
	os.Remove(filepath.Join(mdir, "build"))
	os.Remove(filepath.Join(mdir, "source"))
	return mdir, rel
}

// TestMergeDebianVHDNestedAndRemerge merges packs of real Debian modules
// with a real dependency (fat <- vfat, msdos) over a VHD of the full
// Debian tree without them, into a nested image; then uses that image as
// the base of a second merge that replaces one pack and shadows a stock
// module.
func TestMergeDebianVHDNestedAndRemerge(t *testing.T) {
	fat := []string{"kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/fs/fat/msdos.ko"}
	mdir, rel := debianBaseWithout(t, fat...)
	root, _ := testenv.DebianModules(t)
	orig := filepath.Join(root, "lib", "modules", rel)
	symvers := testenv.DebianSymvers(t)
	ctx := context.Background()
	base := vhdOf(t, mdir, "dynamic")
	fatcore := mkPack(t, "fatcore", rel, map[string]string{"fat.ko": filepath.Join(orig, fat[0])})
	vfat := mkPack(t, "vfat", rel, map[string]string{"vfat.ko": filepath.Join(orig, fat[1])})
	msdos := mkPack(t, "msdos", rel, map[string]string{"msdos.ko": filepath.Join(orig, fat[2])})

	out := filepath.Join(t.TempDir(), "nested.vhdx")
	res, err := Merge(ctx, Options{Base: base, Packs: []string{vfat, msdos, fatcore}, Out: out, Layout: image.LayoutNested, Symvers: symvers})
	if err != nil {
		t.Fatal(err)
	}
	if res.Base.Source.ReleaseFrom != "vermagic" || len(res.Plan.Shadows) != 0 || len(res.Plan.Warnings) != 0 || len(res.Plan.Add) != 3 {
		t.Errorf("plan: from %s shadows %v warnings %v add %d", res.Base.Source.ReleaseFrom, res.Plan.Shadows, res.Plan.Warnings, len(res.Plan.Add))
	}
	fsroot := unpackImage(t, out)
	nested := filepath.Join(fsroot, rel, "modules")
	mroot := t.TempDir()
	os.MkdirAll(filepath.Join(mroot, "lib", "modules"), 0o755)
	if err := os.Rename(nested, filepath.Join(mroot, "lib", "modules", rel)); err != nil {
		t.Fatalf("nested layout: %v", err)
	}
	for m, want := range map[string]string{
		"vfat":  "extra/fatcore/fat.ko extra/vfat/vfat.ko",
		"msdos": "extra/fatcore/fat.ko extra/msdos/msdos.ko",
	} {
		if got := strings.Join(showDepends(t, mroot, rel, m), " "); got != want {
			t.Errorf("modprobe --show-depends %s: %q, want %q", m, got, want)
		}
	}
	sameAsKmod(t, filepath.Join(mroot, "lib", "modules", rel), rel)
	// The record is found in the nested image, under <release>/modules.
	fsys, err := image.OpenFS(out)
	if err != nil {
		t.Fatal(err)
	}
	rec, prefix, err := pack.FindRecord(fsys, out)
	fsys.Close()
	if err != nil || prefix != rel+"/modules" || rec == nil || rec.Origins()["extra/vfat/vfat.ko"].Name != "vfat" {
		t.Errorf("FindRecord in the nested image: %v, prefix %q, record %+v", err, prefix, rec)
	}

	// The merged image as a base: the nested layout and release are read
	// from the image, the record tells which pack each module came from.
	// vfat is merged again from a newer pack (its old files go), and a
	// pack carrying nls_cp437 shadows the stock module.
	vfat2 := filepath.Join(t.TempDir(), "vfat2.tar.zst")
	if _, err := pack.Create(vfat2, pack.CreateOptions{Name: "vfat", Version: "2.0", KernelRelease: rel,
		Modules: map[string]string{"fs/vfat.ko": filepath.Join(orig, fat[1])}}); err != nil {
		t.Fatal(err)
	}
	nls := mkPack(t, "nls", rel, map[string]string{"nls_cp437.ko": filepath.Join(orig, "kernel/fs/nls/nls_cp437.ko")})
	out2 := filepath.Join(t.TempDir(), "remerged.vhdx")
	res, err = Merge(ctx, Options{Base: out, Packs: []string{nls, vfat2}, Out: out2, Symvers: symvers})
	if err != nil {
		t.Fatal(err)
	}
	if res.Base.Source.Kind != "vhdx" || res.Base.Source.Layout != modtree.LayoutNested || res.Base.Source.ReleaseFrom != "nested directory name" || res.Layout != image.LayoutNested {
		t.Errorf("base %s %s from %s; out layout %s", res.Base.Source.Kind, res.Base.Source.Layout, res.Base.Source.ReleaseFrom, res.Layout)
	}
	if strings.Join(res.Plan.Replaced, " ") != "extra/vfat/vfat.ko" {
		t.Errorf("replaced %v", res.Plan.Replaced)
	}
	if len(res.Plan.Shadows) != 1 || res.Plan.Shadows[0].Stock != "kernel/fs/nls/nls_cp437.ko" || res.Plan.Shadows[0].Pack != "nls" {
		t.Errorf("shadows %+v", res.Plan.Shadows)
	}
	fsroot = unpackImage(t, out2)
	m2 := filepath.Join(fsroot, rel, "modules")
	for p, want := range map[string]bool{"extra/vfat/vfat.ko": false, "extra/vfat/fs/vfat.ko": true, "extra/msdos/msdos.ko": true,
		"kernel/fs/nls/nls_cp437.ko": false, "extra/nls/nls_cp437.ko": true} {
		if _, err := os.Stat(filepath.Join(m2, p)); (err == nil) != want {
			t.Errorf("%s present: %v, want %v", p, err == nil, want)
		}
	}
	rec, err = pack.ReadRecordDir(m2)
	if err != nil || rec == nil {
		t.Fatalf("record: %v", err)
	}
	var got []string
	for _, p := range rec.Packs {
		got = append(got, p.Name+"@"+p.Version+":"+strings.Join(p.Files, ","))
	}
	if w := "fatcore@1.0:extra/fatcore/fat.ko msdos@1.0:extra/msdos/msdos.ko nls@1.0:extra/nls/nls_cp437.ko vfat@2.0:extra/vfat/fs/vfat.ko"; strings.Join(got, " ") != w {
		t.Errorf("record packs:\n%s\nwant\n%s", strings.Join(got, " "), w)
	}
	if len(rec.Shadows) != 1 || rec.Shadows[0].Stock != "kernel/fs/nls/nls_cp437.ko" {
		t.Errorf("record shadows %+v", rec.Shadows)
	}
	order, _ := os.ReadFile(filepath.Join(m2, "modules.order"))
	if bytes.Contains(order, []byte("kernel/fs/nls/nls_cp437.ko\n")) || !bytes.HasSuffix(order, []byte("extra/vfat/fs/vfat.ko\n")) || bytes.Contains(order, []byte("extra/vfat/vfat.ko\n")) {
		t.Errorf("modules.order tail: %q", order[max(0, len(order)-200):])
	}
	mroot = t.TempDir()
	os.MkdirAll(filepath.Join(mroot, "lib", "modules"), 0o755)
	os.Rename(m2, filepath.Join(mroot, "lib", "modules", rel))
	if got := strings.Join(showDepends(t, mroot, rel, "nls_cp437"), " "); got != "extra/nls/nls_cp437.ko" {
		t.Errorf("modprobe --show-depends nls_cp437: %q", got)
	}
	sameAsKmod(t, filepath.Join(mroot, "lib", "modules", rel), rel)
}

// TestFromBuildRefusals checks FromBuild's errors on a manifest that does
// not fit: nothing is written.
func TestFromBuildRefusals(t *testing.T) {
	m := &manifest.Manifest{Kernel: manifest.Kernel{Release: "6.12.117-microsoft-standard-WSL2", Arch: "x86_64"},
		Modules: []manifest.Module{{Name: "good", Status: manifest.StatusOK, Files: []string{"extra/good/good.ko"}},
			{Name: "bad", Status: manifest.StatusFailed}}}
	out := filepath.Join(t.TempDir(), "packs")
	for _, c := range []struct {
		names []string
		want  string
	}{
		{nil, "module bad has status failed"},
		{[]string{"nope"}, "module nope is not in build-manifest.json"},
		{[]string{"good"}, "no staging tree for release 6.12.117-microsoft-standard-WSL2"},
	} {
		_, err := pack.FromBuild(t.TempDir(), m, c.names, out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.names, err, c.want)
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("%v: left %v", c.names, ents)
		}
	}
}

func open(t *testing.T, p string) *pack.Pack {
	t.Helper()
	pk, err := pack.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// TestMergeReadsImageInPlace: merging over a VHD reads it in place:
// nothing is written to the temporary directory (TMPDIR), and the output
// directory holds only the output afterwards.
func TestMergeReadsImageInPlace(t *testing.T) {
	mdir, rel := debianBaseWithout(t, "kernel/fs/fat/vfat.ko")
	root, _ := testenv.DebianModules(t)
	base := vhdOf(t, mdir, "dynamic")
	vfat := mkPack(t, "vfat", rel, map[string]string{"vfat.ko": filepath.Join(root, "lib", "modules", rel, "kernel/fs/fat/vfat.ko")})
	tmp, outDir := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	out := filepath.Join(outDir, "modules.vhdx")
	if _, err := Merge(context.Background(), Options{Base: base, Packs: []string{vfat}, Out: out, Symvers: testenv.DebianSymvers(t)}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("merge wrote %s to TMPDIR", ents[0].Name())
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 || ents[0].Name() != "modules.vhdx" {
		t.Errorf("output directory holds %v", ents)
	}
}
