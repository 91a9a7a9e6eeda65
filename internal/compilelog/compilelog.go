// Package compilelog finds compiler diagnostics in build logs and maps
// the build copy's paths back to the module's sources, for annotations.
package compilelog

import (
	"bufio"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// CompileError is one compiler diagnostic found in a build log.
type CompileError struct {
	// File is the source file: under the module's SourceDir when the
	// compiler named a file of the build copy, else as the compiler said.
	File string
	// Line and Column locate it (Column 0 when not given).
	Line, Column int
	// Severity is "error" or "fatal error".
	Severity string
	Message  string
}

// gcc and clang: "path:line:col: error: message" or "path:line: error: message".
var diagRE = regexp.MustCompile(`^([^\s:][^:]*):(\d+):(?:(\d+):)? (error|fatal error): (.*)$`)

// CompileErrors reads a build log and returns the compiler errors in it,
// at most max (0: no limit), without duplicates. Files under buildDir (the
// copy the module was built in) are mapped to the same path under
// sourceDir; relative names are taken relative to buildDir.
func CompileErrors(log io.Reader, buildDir, sourceDir string, max int) []CompileError {
	var out []CompileError
	seen := map[string]bool{}
	sc := bufio.NewScanner(log)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := diagRE.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		line, _ := strconv.Atoi(m[2])
		col, _ := strconv.Atoi(m[3])
		file := mapPath(m[1], buildDir, sourceDir)
		key := file + ":" + m[2] + ":" + m[3] + ":" + m[5]
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, CompileError{File: file, Line: line, Column: col, Severity: m[4], Message: m[5]})
		if max > 0 && len(out) >= max {
			break
		}
	}
	return out
}

func mapPath(p, buildDir, sourceDir string) string {
	p = filepath.Clean(p)
	if !filepath.IsAbs(p) {
		if buildDir == "" {
			return p
		}
		p = filepath.Join(buildDir, p)
	}
	if buildDir != "" && sourceDir != "" {
		if rel, err := filepath.Rel(buildDir, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return filepath.Join(sourceDir, rel)
		}
	}
	return p
}
