// Command action is wsl-modules-action: a GitHub Action (when run with
// GITHUB_ACTIONS=true and no arguments) and a command-line tool that builds a
// WSL2 kernel, out-of-tree modules, depmod data and the modules.vhdx image.
//
// Each subcommand lives in its own file and registers itself with register;
// the subcommands are thin layers over the internal packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/wsl-modules/wsl-modules-action/internal/safeenv"
)

// command is one CLI subcommand.
type command struct {
	// Name is the word that selects the subcommand.
	Name string
	// Summary is a one-line description for the command list.
	Summary string
	// Usage is the synopsis line, without the program name.
	Usage string
	// Examples are complete example invocations, without the program name.
	Examples []string
	// Run executes the subcommand with the arguments after its name.
	Run func(ctx context.Context, env *cliEnv, args []string) error
}

// cliEnv carries the process's standard streams and environment, so that
// subcommands have no global state and can be tested in-process.
type cliEnv struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

var commands = map[string]*command{}

// register adds a subcommand; it is called from init functions.
func register(c *command) {
	if _, dup := commands[c.Name]; dup {
		panic("duplicate command " + c.Name)
	}
	commands[c.Name] = c
}

// errUsage marks an error caused by bad command-line usage (exit code 2).
var errUsage = errors.New("usage error")

func main() {
	// Before anything reads the token: build code run by this process
	// must not read it from /proc/<pid>/environ or memory.
	if err := safeenv.Protect(); err != nil {
		fmt.Fprintf(os.Stderr, "wsl-modules-action: warning: %v\n", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &cliEnv{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches args to a subcommand and returns the process exit code.
func run(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 {
		if env.Getenv("GITHUB_ACTIONS") == "true" {
			if c, ok := commands["action"]; ok {
				return exitCode(env, c.Run(ctx, env, nil))
			}
		}
		printHelp(env.Stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				printCommandHelp(env.Stdout, c, nil)
				return 0
			}
		}
		printHelp(env.Stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "wsl-modules-action: unknown command %q\n\n", args[0])
		printHelp(env.Stderr)
		return 2
	}
	return exitCode(env, c.Run(ctx, env, args[1:]))
}

func exitCode(env *cliEnv, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(env.Stderr, "wsl-modules-action: %v\n", err)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "wsl-modules-action: %v\n", err)
		return 1
	}
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "wsl-modules-action builds a WSL2 kernel and a modules.vhdx with every stock module plus yours.")
	fmt.Fprintln(w, "\nUsage: wsl-modules-action <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].Summary)
	}
	fmt.Fprintln(w, "\nExamples:")
	for _, n := range names {
		for _, e := range commands[n].Examples {
			fmt.Fprintf(w, "  wsl-modules-action %s\n", e)
		}
	}
	fmt.Fprintln(w, "\nRun 'wsl-modules-action help <command>' or '<command> --help' for a command's flags.")
	fmt.Fprintln(w, "With GITHUB_ACTIONS=true and no arguments it runs in action mode.")
}

func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: wsl-modules-action %s\n\n%s\n", c.Usage, c.Summary)
	if fs != nil {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if len(c.Examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, e := range c.Examples {
			fmt.Fprintf(w, "  wsl-modules-action %s\n", e)
		}
	}
}

// newFlagSet returns a flag set for c whose -h output includes the usage and
// examples, and whose parse errors are usage errors.
func newFlagSet(env *cliEnv, c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() { printCommandHelp(env.Stdout, c, fs) }
	return fs
}

// parseFlags parses args with fs. Flags may follow positional arguments
// (as in "image ls FILE --json"). It returns the positional arguments.
func parseFlags(env *cliEnv, c *command, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err // the flag package already printed the usage
			}
			return nil, fmt.Errorf("%s: %v (see '%s --help')%w", c.Name, err, c.Name, wrapUsage)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// wrapUsage appends errUsage to an error chain without changing its text.
var wrapUsage = usageMarker{}

type usageMarker struct{}

func (usageMarker) Error() string        { return "" }
func (usageMarker) Is(target error) bool { return target == errUsage }

// usagef returns a usage error with a formatted message.
func usagef(format string, a ...any) error {
	return fmt.Errorf("%s%w", fmt.Sprintf(format, a...), wrapUsage)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
