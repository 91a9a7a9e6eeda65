package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sample is a manifest with every field set.
func sample() *Manifest {
	return &Manifest{
		Schema: SchemaVersion,
		Tool:   "wsl-modules-action test",
		Kernel: Kernel{
			Tag: "linux-msft-wsl-6.6.87.2", Release: "6.6.87.2-microsoft-standard-WSL2", Arch: "x86_64",
			Source:       Source{Kind: "github-tarball", Repo: "microsoft/WSL2-Linux-Kernel", Tag: "linux-msft-wsl-6.6.87.2", SHA256: "ab12"},
			ConfigSHA256: "c0nf", FragmentSHA256: "fr4g", Compiler: "gcc (Debian 12.2.0-14) 12.2.0",
			ImageFile: "bzImage", CacheKey: "k", CacheHit: true, BuildTimestamp: "Thu Jan  1 00:00:00 UTC 1970",
		},
		Modules: []Module{
			{Name: "v4l2loopback", Version: "0.12.7", Source: Source{Kind: "git", URL: "https://example.invalid/v.git", Ref: "v0.12.7", Commit: "deadbeef"},
				SrcVersion: "ABC", Files: []string{"extra/v4l2loopback.ko"}, Status: StatusOK, Log: "logs/v4l2loopback.log", Seconds: 12.5},
			{Name: "broken", Source: Source{Kind: "path", Path: "/src/broken"}, Status: StatusFailed, Error: "make: *** [x] Error 2",
				DependsOn: []string{"v4l2loopback"}, Pack: "p"},
		},
		Layout:  "flat",
		Headers: "none",
		Image:   &Image{File: "modules.vhdx", Size: 4 << 20, SHA256: "11", RawSHA256: "22", Files: 3, HeadersBytes: 5},
		Inputs: &Inputs{
			Tag: "linux-msft-wsl-6.6.87.2", Arch: "x86_64", ConfigSHA256: "c", FragmentSHA256: "f", Layout: "flat", Headers: "none",
			Modules: []InputModule{
				{Name: "a", Kind: "git", Where: "https://example.invalid/a.git", Pin: "1111", Make: []string{"X=1"}},
				{Name: "b", Kind: "path", Where: "/src/b", Pin: "2222"},
			},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	m := sample()
	b := m.Encode()
	if !strings.HasSuffix(string(b), "}\n") {
		t.Errorf("encoding does not end with a newline: %q", b[len(b)-3:])
	}
	got, err := Decode("x.json", b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, m)
	}
	if string(got.Encode()) != string(b) {
		t.Error("re-encoding differs")
	}
	// Write and Read through a file.
	p := filepath.Join(t.TempDir(), FileName)
	if err := m.Write(p); err != nil {
		t.Fatal(err)
	}
	got, err = Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Error("Write/Read round trip differs")
	}
	if got.Hash() != m.Hash() {
		t.Error("hash changed through a round trip")
	}
}

// TestEncodeFieldNames checks the on-disk field names of the contract
// against an independent decode into a generic map.
func TestEncodeFieldNames(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal(sample().Encode(), &v); err != nil {
		t.Fatal(err)
	}
	k := v["kernel"].(map[string]any)
	for _, f := range []string{"tag", "release", "arch", "source", "config_sha256", "compiler", "image_file", "cache_hit"} {
		if _, ok := k[f]; !ok {
			t.Errorf("kernel.%s missing", f)
		}
	}
	in := v["inputs"].(map[string]any)
	for _, f := range []string{"tag", "arch", "config_sha256", "fragment_sha256", "layout", "headers", "modules"} {
		if _, ok := in[f]; !ok {
			t.Errorf("inputs.%s missing", f)
		}
	}
	if v["schema"].(float64) != SchemaVersion {
		t.Errorf("schema %v", v["schema"])
	}
}

func TestDecodeErrors(t *testing.T) {
	good := string(sample().Encode())
	for _, tc := range []struct {
		name, text, want string
	}{
		{"unknown-top", strings.Replace(good, `"schema": 1,`, `"schema": 1, "bogus": 2,`, 1), `unknown field "bogus"`},
		{"unknown-nested", strings.Replace(good, `"release":`, `"relase": "x", "release":`, 1), `unknown field "relase"`},
		{"schema-2", strings.Replace(good, `"schema": 1,`, `"schema": 2,`, 1), "schema 2, want 1"},
		{"schema-missing", strings.Replace(good, `"schema": 1,`, ``, 1), "schema 0, want 1"},
		{"wrong-type", strings.Replace(good, `"cache_hit": true`, `"cache_hit": "yes"`, 1), "cache_hit"},
		{"truncated", good[:len(good)/2], "unexpected EOF"},
		{"empty", "", "EOF"},
		{"trailing-garbage", good + "x", "after the manifest"},
		{"two-objects", good + good, "after the manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.text == good {
				t.Fatal("test input not altered")
			}
			name := "dist/" + tc.name + ".json"
			m, err := Decode(name, []byte(tc.text))
			if err == nil {
				t.Fatalf("Decode accepted it: %+v", m)
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and %q", err, name, tc.want)
			}
		})
	}
	// Trailing white space is fine.
	if _, err := Decode("ws", []byte(good+"\n\n  ")); err != nil {
		t.Errorf("trailing white space rejected: %v", err)
	}
}

func TestReadMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), FileName)
	if _, err := Read(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Read(missing) = %v, want an error naming %s", err, p)
	}
	if err := os.WriteFile(p, []byte(`{"schema": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Read(schema 3) = %v, want an error naming %s", err, p)
	}
}

func TestHashInputs(t *testing.T) {
	base := sample()
	h := base.Hash()
	if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("Hash %q is not a hex sha256", h)
	}
	// Outcomes and legacy fields do not matter once Inputs is set.
	same := sample()
	same.Kernel.Release, same.Kernel.Compiler, same.Kernel.CacheHit = "other", "clang", false
	same.Modules = nil
	same.Image = nil
	same.Layout = "nested"
	if same.Hash() != h {
		t.Error("Hash with Inputs depends on fields outside Inputs")
	}
	// Module order does not matter.
	rev := sample()
	ms := rev.Inputs.Modules
	ms[0], ms[1] = ms[1], ms[0]
	if rev.Hash() != h {
		t.Error("Hash depends on the order of Inputs.Modules")
	}
	if !reflect.DeepEqual(sample().Inputs.Modules, base.Inputs.Modules) || base.Hash() != h {
		t.Error("Hash modified its manifest")
	}
	for name, change := range map[string]func(*Inputs){
		"tag":        func(in *Inputs) { in.Tag = "linux-msft-wsl-6.6.87.1" },
		"source-pin": func(in *Inputs) { in.SourcePin = "sha256:00" },
		"repo":       func(in *Inputs) { in.KernelRepo = "someone/WSL2-Linux-Kernel" },
		"arch":       func(in *Inputs) { in.Arch = "arm64" },
		"config":     func(in *Inputs) { in.ConfigSHA256 = "c2" },
		"fragment":   func(in *Inputs) { in.FragmentSHA256 = "" },
		"layout":     func(in *Inputs) { in.Layout = "nested" },
		"headers":    func(in *Inputs) { in.Headers = "devel" },
		"module-pin": func(in *Inputs) { in.Modules[1].Pin = "2223" },
		"module-where": func(in *Inputs) {
			in.Modules[0].Where = "https://example.invalid/fork.git"
		},
		"module-kind":  func(in *Inputs) { in.Modules[1].Kind = "url" },
		"module-name":  func(in *Inputs) { in.Modules[1].Name = "c" },
		"module-make":  func(in *Inputs) { in.Modules[0].Make = []string{"X=2"} },
		"module-make+": func(in *Inputs) { in.Modules[1].Make = []string{"V=1"} },
		"module-added": func(in *Inputs) {
			in.Modules = append(in.Modules, InputModule{Name: "z", Kind: "git", Where: "w", Pin: "p"})
		},
		"module-gone":   func(in *Inputs) { in.Modules = in.Modules[:1] },
		"make-boundary": func(in *Inputs) { in.Modules[0].Make = []string{"X=1", ""} },
	} {
		m := sample()
		change(m.Inputs)
		if m.Hash() == h {
			t.Errorf("Hash unchanged when %s changes", name)
		}
	}
}

// TestHashKernelRepo: the same tag from another repository is another
// build, while the hash of a build from the default repository (KernelRepo
// empty) is the one computed before KernelRepo existed, so releases
// published before stay up to date.
func TestHashKernelRepo(t *testing.T) {
	in := Inputs{Tag: "linux-msft-wsl-6.6.87.2", Arch: "x86_64", Layout: "flat", Headers: "devel",
		Modules: []InputModule{{Name: "v4l2loopback", Kind: "git", Where: "https://github.com/umlaeute/v4l2loopback",
			Pin: "0123456789abcdef0123456789abcdef01234567"}}}
	// Computed by the code before KernelRepo was added (commit ea4ae11).
	const before = "5caa11d8944818905bc4e40016961d2aee23e990c9aacf86634d7fc0b783dc23"
	if h := (&Manifest{Inputs: &in}).Hash(); h != before {
		t.Errorf("default-repo hash %s, want the earlier %s", h, before)
	}
	fork := in
	fork.KernelRepo = "someone/WSL2-Linux-Kernel"
	if (&Manifest{Inputs: &fork}).Hash() == before {
		t.Error("the same tag from another repository has the same hash")
	}
}

// TestHashDuplicateNames: modules sharing a name (two entries of a list)
// must not make the hash depend on their order.
func TestHashDuplicateNames(t *testing.T) {
	a, b := sample(), sample()
	a.Inputs.Modules = []InputModule{{Name: "x", Kind: "git", Where: "1", Pin: "1"}, {Name: "x", Kind: "git", Where: "2", Pin: "2"}}
	b.Inputs.Modules = []InputModule{a.Inputs.Modules[1], a.Inputs.Modules[0]}
	if a.Hash() != b.Hash() {
		t.Error("Hash depends on the order of same-named Inputs.Modules")
	}
	a.Inputs, b.Inputs = nil, nil
	a.Modules = []Module{{Name: "x", Source: Source{Kind: "git", URL: "1", Commit: "1"}}, {Name: "x", Source: Source{Kind: "git", URL: "2", Commit: "2"}}}
	b.Modules = []Module{a.Modules[1], a.Modules[0]}
	if a.Hash() != b.Hash() {
		t.Error("legacy Hash depends on the order of same-named Modules")
	}
}

func TestHashLegacy(t *testing.T) {
	legacy := func() *Manifest {
		m := sample()
		m.Inputs = nil
		return m
	}
	h := legacy().Hash()
	if h == sample().Hash() {
		t.Error("legacy Hash equals the Inputs Hash")
	}
	// Outcomes do not matter.
	same := legacy()
	same.Kernel.Compiler, same.Kernel.CacheHit, same.Kernel.CacheKey, same.Image = "clang", false, "", nil
	same.Modules[0].Status, same.Modules[0].Seconds, same.Modules[0].Files = StatusFailed, 99, nil
	same.Modules[0], same.Modules[1] = same.Modules[1], same.Modules[0]
	if same.Hash() != h {
		t.Error("legacy Hash depends on outcomes or module order")
	}
	for name, change := range map[string]func(*Manifest){
		"tag":           func(m *Manifest) { m.Kernel.Tag = "t2" },
		"release":       func(m *Manifest) { m.Kernel.Release = "r2" },
		"arch":          func(m *Manifest) { m.Kernel.Arch = "arm64" },
		"config":        func(m *Manifest) { m.Kernel.ConfigSHA256 = "c2" },
		"fragment":      func(m *Manifest) { m.Kernel.FragmentSHA256 = "" },
		"layout":        func(m *Manifest) { m.Layout = "nested" },
		"headers":       func(m *Manifest) { m.Headers = "devel" },
		"module-commit": func(m *Manifest) { m.Modules[0].Source.Commit = "beefdead" },
		"module-path":   func(m *Manifest) { m.Modules[1].Source.Path = "/src/other" },
		"module-url":    func(m *Manifest) { m.Modules[0].Source.URL = "https://example.invalid/fork.git" },
		"module-kind":   func(m *Manifest) { m.Modules[1].Source.Kind = "url" },
		"module-name":   func(m *Manifest) { m.Modules[1].Name = "c" },
		"module-gone":   func(m *Manifest) { m.Modules = m.Modules[:1] },
	} {
		m := legacy()
		change(m)
		if m.Hash() == h {
			t.Errorf("legacy Hash unchanged when %s changes", name)
		}
	}
}

func TestSourcePin(t *testing.T) {
	full := Source{Kind: "git", Commit: "c", SHA256: "s", Ref: "r", Tag: "t", Path: "p", URL: "u"}
	// Each step clears the most precise remaining field.
	for _, want := range []string{"c", "s", "r", "t", "p", "u", ""} {
		if got := full.Pin(); got != want {
			t.Errorf("Pin of %+v = %q, want %q", full, got, want)
		}
		switch want {
		case "c":
			full.Commit = ""
		case "s":
			full.SHA256 = ""
		case "r":
			full.Ref = ""
		case "t":
			full.Tag = ""
		case "p":
			full.Path = ""
		case "u":
			full.URL = ""
		}
	}
	if got := (Source{Kind: "tarball", URL: "u", SHA256: "s"}).Pin(); got != "s" {
		t.Errorf("sha256 does not win over the URL: %q", got)
	}
}

func TestFailed(t *testing.T) {
	m := sample()
	f := m.Failed()
	if len(f) != 1 || f[0].Name != "broken" {
		t.Errorf("Failed = %+v", f)
	}
	m.Modules = nil
	if len(m.Failed()) != 0 {
		t.Error("Failed of no modules")
	}
}
