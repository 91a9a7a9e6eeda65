package intree

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsl-modules/wsl-modules-action/internal/kbuild"
	"github.com/wsl-modules/wsl-modules-action/internal/kconfig"
)

// PlanSource plans the fragment o.Fragment for the kernel source o.Source
// (a directory) with its config: olddefconfig without and with the
// fragment, each in a scratch object tree under workDir (kbuild's own
// configuration steps, with the fragment's rules), then PlanFragment. A fragment
// the configuration steps refuse (y->m, an option that does not come out
// m, a change to an option already set) is an *Error like PlanFragment's
// refusals; other errors (a broken tree, no compiler) are not.
func PlanSource(ctx context.Context, o kbuild.KernelOptions, workDir string, jobs int) (*Plan, error) {
	if o.Fragment == nil || len(o.Fragment.Lines) == 0 {
		return nil, errors.New("intree: no config fragment to plan")
	}
	tc, err := kbuild.ToolchainFor(o.Arch, o.HostArch)
	if err != nil {
		return nil, fmt.Errorf("intree: %w", err)
	}
	frag := o.Fragment
	o.Fragment = nil
	_, before, err := kbuild.CheckConfig(ctx, o, workDir)
	if err != nil {
		return nil, fmt.Errorf("intree: the stock config: %w", err)
	}
	o.Fragment = frag
	_, after, err := kbuild.CheckConfig(ctx, o, workDir)
	var fe *kconfig.FragmentError
	if errors.As(err, &fe) {
		return nil, &Error{Refusals: []Refusal{{Msg: fe.Error()}}}
	}
	if err != nil {
		return nil, fmt.Errorf("intree: the config with the fragment: %w", err)
	}
	return PlanFragment(ctx, Options{Src: o.Source, SrcArch: tc.SrcArch, Fragment: frag, Before: before, After: after, Jobs: jobs})
}
