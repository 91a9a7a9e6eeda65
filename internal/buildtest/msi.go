package buildtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsl-modules/wsl-modules-action/internal/testenv"
)

// MSISpec describes a WSL-shaped MSI for wixl.
type MSISpec struct {
	// Version is the ProductVersion, e.g. 2.6.1.0 (the default).
	Version string
	// Kernel and Modules are the sources of tools\kernel and of the
	// modules image ("" leaves each out); ModulesName is its name
	// (modules.vhd by default, or artifacts.vhd).
	Kernel, Modules, ModulesName string
}

// WSLWXS is WSL's package.wix.in reduced to its folders and a few files
// of each component, in the WiX 3 schema wixl reads: %[1]s is the
// ProductVersion, %[2]s the extra File elements of the tools component.
const WSLWXS = `<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="Windows Subsystem for Linux" Language="1033" Version="%[1]s" Manufacturer="Microsoft Corporation" UpgradeCode="6D5B792B-1EDC-4DE9-8EAD-201B820F8E82">
    <Package InstallerVersion="500" Compressed="yes" InstallScope="perMachine"/>
    <Media Id="1" Cabinet="cab1.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="WSL">
          <Component Id="wsl" Guid="F0C8D6BA-1502-41E7-BF72-D93DFA134730" Win64="yes">
            <File Id="wsl.exe" Name="wsl.exe" Source="wsl.exe" KeyPath="yes"/>
            <File Id="wslservice.exe" Name="wslservice.exe" Source="wslservice.exe"/>
          </Component>
          <Directory Id="TOOLSFOLDER" Name="tools">
            <Component Id="tools" Guid="F0C8D6BA-1502-41E7-BF72-D93DFA134733" Win64="yes">
              <File Id="init" Name="init" Source="init" KeyPath="yes"/>
              <File Id="bsdtar" Name="bsdtar" Source="bsdtar"/>
%[2]s            </Component>
          </Directory>
          <Directory Id="LIBFOLDER" Name="lib">
            <Component Id="directx" Guid="F0C8D6BA-1502-41E7-BF72-D93DFA134732" Win64="yes">
              <File Id="libd3d12.so" Name="libd3d12.so" Source="libd3d12.so" KeyPath="yes"/>
            </Component>
          </Directory>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Complete" Level="1"><ComponentRef Id="wsl"/><ComponentRef Id="tools"/><ComponentRef Id="directx"/></Feature>
  </Product>
</Wix>
`

// WSLMSI builds, with msitools' wixl, an MSI laid out as WSL's installer
// (WSL's msipackage/package.wix.in reduced to its folders and a few files
// of each component: ProgramFiles64Folder\WSL\tools\kernel and
// modules.vhd, File ids "kernel" and the image's name, an embedded
// MSZIP cab1.cab), and returns its path.
func WSLMSI(t testing.TB, s MSISpec) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"wsl.exe", "wslservice.exe", "init", "bsdtar", "libd3d12.so"} {
		os.WriteFile(filepath.Join(dir, n), []byte("stand-in for WSL's "+n+"\n"), 0o644)
	}
	var files strings.Builder
	if s.Kernel != "" {
		linkOrCopy(t, s.Kernel, filepath.Join(dir, "src-kernel"))
		fmt.Fprintf(&files, "              <File Id=\"kernel\" Name=\"kernel\" Source=\"src-kernel\"/>\n")
	}
	if s.Modules != "" {
		name := s.ModulesName
		if name == "" {
			name = "modules.vhd"
		}
		linkOrCopy(t, s.Modules, filepath.Join(dir, "src-modules"))
		fmt.Fprintf(&files, "              <File Id=%q Name=%q Source=\"src-modules\"/>\n", name, name)
	}
	if s.Version == "" {
		s.Version = "2.6.1.0"
	}
	wxs := filepath.Join(dir, "package.wxs")
	os.WriteFile(wxs, []byte(fmt.Sprintf(WSLWXS, s.Version, files.String())), 0o644)
	out := filepath.Join(dir, "wsl."+s.Version+".x64.msi")
	cmd := exec.Command(testenv.Tool(t, "wixl"), "-a", "x64", "-o", out, wxs)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wixl: %v\n%s", err, b)
	}
	return out
}

// linkOrCopy links (or copies) a source file into wixl's directory:
// wixl takes only relative Source paths.
func linkOrCopy(t testing.TB, from, to string) {
	t.Helper()
	if os.Link(from, to) == nil {
		return
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
