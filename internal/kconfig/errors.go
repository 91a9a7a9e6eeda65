package kconfig

import "fmt"

// FragmentError is a config fragment refused by its rules (ParseFragment,
// CheckBase, CheckResult), as opposed to a failure to read or configure:
// callers tell the two apart with errors.As (through any wrapping).
type FragmentError struct {
	msg string
}

// Error is the refusal, naming the fragment's file and line.
func (e *FragmentError) Error() string { return e.msg }

// fragmentErr makes a *FragmentError.
func fragmentErr(format string, a ...any) error {
	return &FragmentError{msg: fmt.Sprintf(format, a...)}
}

// linesText names the fragment's lines for a refusal about all of them:
// "file:3: config-fragment: CONFIG_A=m" or "file:3,5: config-fragment:
// CONFIG_A=m, CONFIG_B=m (one of them)".
func (f *Fragment) linesText() string {
	if len(f.Lines) == 0 {
		return f.File + ": config-fragment:"
	}
	var nums, opts string
	for i, l := range f.Lines {
		if i > 0 {
			nums += ","
			opts += ", "
		}
		nums += fmt.Sprint(l.Line)
		opts += l.Name + "=m"
	}
	s := fmt.Sprintf("%s:%s: config-fragment: %s", f.File, nums, opts)
	if len(f.Lines) > 1 {
		s += " (one of them)"
	}
	return s
}
