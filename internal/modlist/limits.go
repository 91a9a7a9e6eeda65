package modlist

import (
	"fmt"

	"github.com/goccy/go-yaml/ast"
)

// Limits of a module list. Real lists are a few KiB; these bound what a
// broken or hostile file can cost to parse.
const (
	// MaxFileSize is the largest list file, in bytes.
	MaxFileSize = 1 << 20
	// MaxNesting is the deepest nesting of flow collections ([ and {).
	MaxNesting = 64
	// MaxNodes is the most YAML nodes a list may have once its aliases
	// are expanded (an alias decodes to a copy of its anchor's value).
	MaxNodes = 200_000
	// MaxMakeArgs is the most make: arguments of one module; MaxMakeArg
	// the longest make: template and MaxExpanded its longest expansion.
	MaxMakeArgs = 256
	MaxMakeArg  = 4096
	MaxExpanded = 16384
)

// checkSize refuses a file that is too large or nests flow collections
// too deeply, before the YAML parser (which recurses) sees it. Brackets
// are counted everywhere, quoted or not: a list has no reason for 64
// unclosed ones.
func checkSize(name string, data []byte) error {
	if len(data) > MaxFileSize {
		return &Error{File: name, Msg: fmt.Sprintf("%d bytes; a module list may have at most %d", len(data), MaxFileSize)}
	}
	depth, line, col := 0, 1, 0
	for _, c := range data {
		col++
		switch c {
		case '\n':
			line, col = line+1, 0
		case '[', '{':
			if depth++; depth > MaxNesting {
				return &Error{File: name, Line: line, Column: col, Msg: fmt.Sprintf("nested more than %d levels deep", MaxNesting)}
			}
		case ']', '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return nil
}

// checkAST refuses, before the document is decoded, YAML tags (a list
// needs none, and the YAML library mishandles some on sequences) and a
// document whose aliases expand to more than MaxNodes nodes (the
// "billion laughs" file).
func checkAST(name string, f *ast.File) error {
	anchors := map[string]ast.Node{}
	w := &astChecker{anchors: anchors}
	for _, d := range f.Docs {
		if d != nil {
			ast.Walk(w, d)
		}
	}
	if w.tag != nil {
		e := &Error{File: name, Msg: fmt.Sprintf("YAML tags such as %s are not supported in a module list", w.tag.Start.Value)}
		if w.tag.Start != nil && w.tag.Start.Position != nil {
			e.Line, e.Column = w.tag.Start.Position.Line, w.tag.Start.Position.Column
		}
		return e
	}
	c := &counter{anchors: anchors, memo: map[ast.Node]int{}, active: map[ast.Node]bool{}}
	total := 0
	for _, d := range f.Docs {
		if total += c.size(d); total > MaxNodes {
			break
		}
	}
	if total > MaxNodes {
		return &Error{File: name, Msg: fmt.Sprintf("more than %d YAML nodes once its aliases are expanded", MaxNodes)}
	}
	return nil
}

// astChecker collects anchors and finds the first tag.
type astChecker struct {
	anchors map[string]ast.Node
	tag     *ast.TagNode
}

func (a *astChecker) Visit(n ast.Node) ast.Visitor {
	switch x := n.(type) {
	case *ast.AnchorNode:
		if x.Name != nil {
			a.anchors[x.Name.String()] = x.Value
		}
	case *ast.TagNode:
		if a.tag == nil && x.Start != nil {
			a.tag = x
		}
	}
	return a
}

// counter sizes nodes with aliases expanded, memoized, stopping once the
// total exceeds MaxNodes.
type counter struct {
	anchors map[string]ast.Node
	memo    map[ast.Node]int
	active  map[ast.Node]bool
}

func (c *counter) size(n ast.Node) int {
	if n == nil {
		return 0
	}
	if s, ok := c.memo[n]; ok {
		return s
	}
	if c.active[n] {
		return 1 // a cycle: decoded as empty
	}
	c.active[n] = true
	defer delete(c.active, n)
	s := 1
	add := func(ch ast.Node) {
		if s <= MaxNodes {
			s += c.size(ch)
		}
	}
	switch x := n.(type) {
	case *ast.DocumentNode:
		add(x.Body)
	case *ast.MappingNode:
		for _, v := range x.Values {
			add(v)
		}
	case *ast.MappingValueNode:
		add(x.Key)
		add(x.Value)
	case *ast.MappingKeyNode:
		add(x.Value)
	case *ast.SequenceNode:
		for _, v := range x.Values {
			add(v)
		}
	case *ast.AnchorNode:
		add(x.Value)
	case *ast.TagNode:
		add(x.Value)
	case *ast.AliasNode:
		if x.Value != nil {
			add(c.anchors[x.Value.String()])
		}
	}
	c.memo[n] = s
	return s
}
