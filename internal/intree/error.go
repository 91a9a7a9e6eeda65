package intree

import (
	"fmt"
	"sort"
	"strings"
)

// maxPerOption bounds the refusals listed per option (the rest are
// counted).
const maxPerOption = 3

// Refusal is one reason a fragment option cannot be built in stock mode.
type Refusal struct {
	// Option is CONFIG_X ("" for a refusal of the whole fragment).
	Option string
	// FragmentFile and FragmentLine locate the option's fragment line
	// (line 0: the fragment made it visible).
	FragmentFile string
	FragmentLine int
	// Where is the file:line the reason is about ("" for none).
	Where string
	// Msg says what is wrong.
	Msg string
	// More counts further refusals of the option left out.
	More int
	// code is set for references in code, listed after the others.
	code bool
}

// String is the refusal as one message: fragment file and line, option,
// file:line, reason.
func (r Refusal) String() string {
	if r.Option == "" {
		return r.Msg
	}
	s := r.FragmentFile
	if r.FragmentLine > 0 {
		s += fmt.Sprintf(":%d", r.FragmentLine)
	}
	s += ": config-fragment: " + r.Option
	if r.FragmentLine == 0 {
		s += " (made visible by the fragment)"
	}
	s += ": "
	if r.Where != "" {
		s += r.Where + ": "
	}
	s += r.Msg
	if r.More > 0 {
		s += fmt.Sprintf(" (and %d more like it)", r.More)
	}
	return s
}

// Error is PlanFragment's refusal of a fragment: stock mode cannot apply it to
// Microsoft's kernel, build mode can.
type Error struct {
	Refusals []Refusal
}

// hint ends every refusal.
const hint = "stock mode cannot apply this config fragment to Microsoft's kernel (use kernel: build)"

// Error lists the refusals and says to use kernel: build.
func (e *Error) Error() string {
	if len(e.Refusals) == 1 {
		s := e.Refusals[0].String()
		if strings.Contains(s, "\n") {
			return s + "\n" + hint
		}
		return s + "; " + hint
	}
	var b strings.Builder
	b.WriteString(hint + ":")
	for _, r := range e.Refusals {
		b.WriteString("\n  " + r.String())
	}
	return b.String()
}

// Summary is the first refusal in one line, with the count of the
// others, for a mode reason.
func (e *Error) Summary() string {
	if len(e.Refusals) == 0 {
		return hint
	}
	s := strings.ReplaceAll(e.Refusals[0].String(), "\n", " ")
	if n := len(e.Refusals) - 1; n > 0 {
		s += fmt.Sprintf(" (and %d more)", n)
	}
	return s
}

// refuseAt records a refusal of opt about where (file:line).
func (p *planner) refuseAt(opt, where, format string, a ...any) {
	r := Refusal{Option: opt, FragmentFile: p.o.Fragment.File, Where: where, Msg: fmt.Sprintf(format, a...)}
	if o := p.opts[opt]; o != nil {
		r.FragmentLine = o.Line
	}
	p.refusals = append(p.refusals, r)
}

// refuse records a refusal of opt about a make line.
func (p *planner) refuse(opt string, l *mkLine, format string, a ...any) {
	p.refuseAt(opt, fmt.Sprintf("%s:%d", l.file, l.line), format, a...)
}

// refuseOpt records a refusal of opt as a whole.
func (p *planner) refuseOpt(opt, format string, a ...any) {
	p.refuseAt(opt, "", format, a...)
}

// refused reports whether opt has a refusal.
func (p *planner) refused(opt string) bool {
	for _, r := range p.refusals {
		if r.Option == opt {
			return true
		}
	}
	return false
}

// error returns the refusals as an *Error in a stable order (by
// fragment line, options the fragment made visible last; per option the
// make and structure reasons before references in code), at most
// maxPerOption per option with the rest counted.
func (p *planner) error() *Error {
	rs := append([]Refusal(nil), p.refusals...)
	key := func(r Refusal) int {
		if r.FragmentLine == 0 {
			return 1 << 30
		}
		return r.FragmentLine
	}
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		switch {
		case key(a) != key(b):
			return key(a) < key(b)
		case a.Option != b.Option:
			return a.Option < b.Option
		case a.code != b.code:
			return !a.code
		}
		return a.Where < b.Where
	})
	var out []Refusal
	n := 0
	for i, r := range rs {
		if i > 0 && r.Option == rs[i-1].Option {
			n++
		} else {
			n = 0
		}
		if n >= maxPerOption && r.Option != "" {
			out[len(out)-1].More++
			continue
		}
		out = append(out, r)
	}
	return &Error{Refusals: out}
}
