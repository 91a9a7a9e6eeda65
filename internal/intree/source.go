package intree

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// PlanSource plans the fragment o.Fragment for the kernel source o.Source
// (a directory) with its config: kbuild's own configuration steps with
// the fragment's rules, in a scratch object tree under workDir, give the
// config without the fragment (olddefconfig) and with it, then
// PlanFragment. A fragment the configuration steps refuse (y->m, an option
// that does not come out m, a change to an option already set) is an
// *Error like PlanFragment's refusals; other errors (a broken tree, no
// compiler) are not.
func PlanSource(ctx context.Context, o kbuild.KernelOptions, workDir string, jobs int) (*Plan, error) {
	if o.Fragment == nil || len(o.Fragment.Lines) == 0 {
		return nil, errors.New("intree: no config fragment to plan")
	}
	tc, err := kbuild.ToolchainFor(o.Arch, o.HostArch)
	if err != nil {
		return nil, fmt.Errorf("intree: %w", err)
	}
	c, err := kbuild.CheckConfig(ctx, o, workDir)
	var fe *kconfig.FragmentError
	if errors.As(err, &fe) {
		return nil, &Error{Refusals: []Refusal{{Msg: fe.Error()}}}
	}
	if err != nil {
		return nil, fmt.Errorf("intree: configuring %s: %w", o.Source, err)
	}
	return PlanFragment(ctx, Options{Src: o.Source, SrcArch: tc.SrcArch, Fragment: o.Fragment, Before: c.Base, After: c.Final, Jobs: jobs})
}
