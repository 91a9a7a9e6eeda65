package pipeline

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/wsl-modules/wsl-modules-action/internal/atomicfile"
	"github.com/wsl-modules/wsl-modules-action/internal/intree"
	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
	"github.com/wsl-modules/wsl-modules-action/internal/manifest"
)

// planFragment decides, for a kernel in stock mode with a config
// fragment, what the fragment adds: intree.PlanSource over the kernel
// source with the config given, else the one Microsoft's kernel embeds,
// else the tree's. A plan makes its units
// part of the modules stage; a refusal fails stock mode (given
// explicitly) or, in auto mode, switches k to build mode with the
// refusal as the reason. Nothing is prepared or built before this
// decision; recheckFragment confirms it against the prepared config.
func (r *runner) planFragment(ctx context.Context, k *kernelJob) error {
	if k.mode != ModeStock || !r.hasFragment() {
		return nil
	}
	return r.stage(k, "config-fragment", func() error {
		src, err := r.sourceDir(ctx, k)
		if err != nil {
			return err
		}
		config := r.o.ConfigFile
		if config == "" {
			if config, err = r.embeddedConfig(ctx, k); err != nil {
				return err
			}
		}
		_, err = r.applyPlan(ctx, k, src, config)
		return err
	})
}

// embeddedConfig writes the config Microsoft's kernel embeds, which
// PrepareStock prepares with when no config is given, to k's work dir
// and returns its path; "" when the kernel embeds none (the tree's
// config is then the one).
func (r *runner) embeddedConfig(ctx context.Context, k *kernelJob) (string, error) {
	kernel, _, _, err := r.stockPaths(ctx, k)
	if err != nil {
		return "", err
	}
	data, err := kbuild.EmbeddedConfig(kernel)
	if err != nil || data == nil {
		return "", err
	}
	p := filepath.Join(k.dir, "stock-config")
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return "", fmt.Errorf("pipeline: %w", err)
	}
	return p, nil
}

// applyPlan plans the fragment over src with config (the tree's when
// "") and records the outcome in k: the plan, or, in auto mode, build
// mode (switched reports that); in stock mode a refusal is the error.
func (r *runner) applyPlan(ctx context.Context, k *kernelJob, src, config string) (switched bool, err error) {
	ko := kbuild.KernelOptions{Source: src, ConfigFile: config, Fragment: r.fragment, Arch: r.arch,
		Timestamp: r.epoch(), Progress: r.log}
	plan, err := intree.PlanSource(ctx, ko, k.dir, r.o.Jobs)
	var refusal *intree.Error
	switch {
	case errors.As(err, &refusal) && r.kernelMode() == ModeStock:
		return false, fmt.Errorf("pipeline: %s: kernel mode stock: %w", k.name, err)
	case errors.As(err, &refusal):
		r.log.Printf("%s: %v", k.name, err)
		k.mode, k.stock, k.intree = ModeBuild, nil, nil
		k.modeReason = k.stockWhy + ", but " + refusal.Summary() + "; so the kernel is built from the tag's source with the fragment (not Microsoft's binary)"
		switched = true
	case err != nil:
		return false, fmt.Errorf("pipeline: %s: config fragment: %w", k.name, err)
	default:
		k.intree = plan
		k.modeReason = k.stockWhy + "; " + fragmentReason(plan) + "; the release carries Microsoft's kernel unchanged"
		for _, n := range plan.Notes {
			r.log.Printf("%s: config fragment: %s", k.name, n)
		}
	}
	r.log.Printf("%s: %s", k.name, k.modeReason)
	return switched, nil
}

// recheckFragment makes sure k's plan was made against the config the
// stock tree was prepared with (kbuild may prepare with another one than
// given, such as the config Microsoft's kernel embeds): when they differ,
// the fragment is planned again over the prepared config, and a refusal
// then fails stock mode or, in auto mode, builds the kernel (ko) instead.
func (r *runner) recheckFragment(ctx context.Context, k *kernelJob, kern *kbuild.Kernel, ko kbuild.KernelOptions) (*kbuild.Kernel, error) {
	if k.intree == nil || k.intree.Base == nil {
		return kern, nil
	}
	prepared, err := kconfig.ReadConfig(kern.Config())
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s: %w", k.name, err)
	}
	if len(kconfig.DiffConfig(k.intree.Base, prepared)) == 0 {
		return kern, nil
	}
	r.log.Printf("%s: the stock tree was prepared with another config than the fragment was planned against; planning it again", k.name)
	src, err := r.sourceDir(ctx, k)
	if err != nil {
		return nil, err
	}
	switched, err := r.applyPlan(ctx, k, src, kern.Config())
	if err != nil || !switched {
		return kern, err
	}
	return kbuild.BuildKernel(ctx, ko)
}

// fragmentReason says what a plan builds, for the mode reason.
func fragmentReason(p *intree.Plan) string {
	if len(p.Units) == 0 {
		return "the config fragment adds nothing to the stock config"
	}
	var parts []string
	for _, u := range p.Units {
		parts = append(parts, fmt.Sprintf("%s/ (%s)", u.Dir, strings.Join(u.Selected, ", ")))
	}
	return "the config fragment's options are module-only, so their in-tree modules are built for Microsoft's kernel: " + strings.Join(parts, ", ")
}

// inTreeUnits are the in-tree builds of shard i (all in shard 1).
func (k *kernelJob) inTreeUnits(shard int) []intree.Unit {
	if k.intree == nil || shard != 1 {
		return nil
	}
	return k.intree.Units
}

// restoreMode takes the kernel stage's decision from a kernel.json
// record (written by this stage in an earlier run or job): the mode, its
// reason and the in-tree plan. It reports false for a record whose plan
// does not validate (the record is then not used).
func (k *kernelJob) restoreMode(rec *kernelRecord) bool {
	if rec.InTree != nil {
		for i := range rec.InTree.Units {
			if rec.InTree.Units[i].Validate() != nil {
				return false
			}
		}
	}
	if rec.Mode != "" {
		k.mode, k.modeReason = rec.Mode, rec.ModeReason
		if rec.Mode == manifest.ModeBuild {
			k.stock = nil
		}
	}
	k.intree = rec.InTree
	return true
}

// moduleNames are the names of k's module builds: the listed modules,
// then the in-tree units.
func (r *runner) moduleNames(k *kernelJob) []string {
	var out []string
	for _, m := range r.list.Modules {
		out = append(out, m.Name)
	}
	for _, u := range k.inTreeUnits(1) {
		out = append(out, u.Name)
	}
	return out
}
