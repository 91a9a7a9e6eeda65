package kbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// Module signing in build mode: a kernel built with CONFIG_MODULE_SIG
// signs its own modules at modules_install with the key the build made
// (certs/signing_key.pem, unless CONFIG_MODULE_SIG_KEY names another), and
// loads only modules signed with it when CONFIG_MODULE_SIG_FORCE is set.
// The entry keeps that key in signing/, outside kernel-devel (which the
// image ships): the private key never leaves the cache.
const signingDir = "signing"

// Signing values of KernelMeta.Signing (see manifest.Kernel.Signing).
const (
	SigningSigned   = "signed"
	SigningUnsigned = "unsigned"
)

// keepSigningKey copies the build's signing key and certificate into the
// entry when the config signs modules, and returns the Signing value.
func (b *kernelBuild) keepSigningKey(dir string, cfg kconfig.Config) (string, error) {
	if cfg.Get("CONFIG_MODULE_SIG") != "y" {
		return "", nil
	}
	key := strings.Trim(cfg.Get("CONFIG_MODULE_SIG_KEY"), `"`)
	if key == "" || strings.HasPrefix(key, "pkcs11:") {
		return "", fmt.Errorf("kernel: CONFIG_MODULE_SIG_KEY %q: modules can only be signed with a key file the build can read", key)
	}
	from := key
	if !filepath.IsAbs(from) {
		from = filepath.Join(b.obj, key)
		if _, err := os.Stat(from); err != nil {
			from = filepath.Join(b.src, key)
		}
	}
	to := filepath.Join(dir, signingDir)
	if err := os.MkdirAll(to, 0o700); err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	if err := atomicfile.CopyFile(from, filepath.Join(to, "signing_key.pem"), 0o600); err != nil {
		return "", fmt.Errorf("kernel: module signing key %s: %w", key, err)
	}
	if err := atomicfile.CopyFile(filepath.Join(b.obj, "certs", "signing_key.x509"), filepath.Join(to, "signing_key.x509"), 0o644); err != nil {
		return "", fmt.Errorf("kernel: module signing certificate: %w", err)
	}
	return SigningSigned, nil
}

// SignModule signs the module file ko in place as modules_install signs
// the kernel's own modules: with the entry's key, the config's hash
// (CONFIG_MODULE_SIG_HASH) and the kernel's scripts/sign-file. It does
// nothing for entries that do not sign modules (stock mode included:
// nobody but Microsoft holds that key).
func (k *Kernel) SignModule(ctx context.Context, ko string) error {
	if k.Meta.Signing != SigningSigned {
		return nil
	}
	cfg, err := kconfig.ReadConfig(k.Config())
	if err != nil {
		return fmt.Errorf("sign %s: %w", ko, err)
	}
	hash := strings.Trim(cfg.Get("CONFIG_MODULE_SIG_HASH"), `"`)
	if hash == "" {
		return fmt.Errorf("sign %s: the config has no CONFIG_MODULE_SIG_HASH", ko)
	}
	dir := filepath.Join(k.Dir, signingDir)
	cmd := exec.CommandContext(ctx, filepath.Join(k.DevelDir(), "scripts", "sign-file"), hash,
		filepath.Join(dir, "signing_key.pem"), filepath.Join(dir, "signing_key.x509"), ko)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sign %s: scripts/sign-file: %w: %s", ko, err, strings.TrimSpace(string(out)))
	}
	return nil
}
