// Package composetest reads the project's compose files for tests, since
// no Docker engine runs in CI: the small YAML subset they keep to (block
// mappings, block lists of scalars, scalars; flow collections are kept as
// their text), and the services' environments.
package composetest

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Node is a node of the YAML subset.
type Node struct {
	M    map[string]*Node // a mapping's entries
	Keys []string         // a mapping's keys, in file order
	List []*Node          // a list's items
	S    string           // a scalar, unquoted
}

// Get returns the entry key of a mapping, nil when n is not a mapping or
// lacks it.
func (n *Node) Get(key string) *Node {
	if n == nil || n.M == nil {
		return nil
	}
	return n.M[key]
}

// Strings returns the scalars of a list.
func (n *Node) Strings() []string {
	if n == nil {
		return nil
	}
	var out []string
	for _, item := range n.List {
		out = append(out, item.S)
	}
	return out
}

// File is a parsed compose file.
type File struct {
	Root *Node
}

// Load parses the compose file at path, failing the test on anything
// outside the subset.
func Load(t testing.TB, path string) *File {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Parse(string(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if n.Get("services") == nil {
		t.Fatalf("%s has no services", path)
	}
	return &File{Root: n}
}

// Service returns the service name, nil when there is none.
func (f *File) Service(name string) *Node {
	return f.Root.Get("services").Get(name)
}

// Services returns the services' names, in file order.
func (f *File) Services() []string {
	return f.Root.Get("services").Keys
}

// Env returns the environment the service sets (values as written, with
// compose's ${VAR:-default} left alone).
func (f *File) Env(service string) map[string]string {
	out := map[string]string{}
	if e := f.Service(service).Get("environment"); e != nil {
		for _, k := range e.Keys {
			out[k] = e.M[k].S
		}
	}
	return out
}

// Parse parses text in the YAML subset.
func Parse(text string) (*Node, error) {
	var lines []line
	for i, raw := range strings.Split(text, "\n") {
		s := stripComment(raw)
		if strings.TrimSpace(s) == "" {
			continue
		}
		indent := len(s) - len(strings.TrimLeft(s, " "))
		if strings.Contains(s[:indent], "\t") {
			return nil, fmt.Errorf("line %d: tab in indentation", i+1)
		}
		lines = append(lines, line{i + 1, indent, strings.TrimSpace(s)})
	}
	p := &parser{lines: lines}
	n, err := p.block(0)
	if err != nil {
		return nil, err
	}
	if p.i != len(lines) {
		return nil, fmt.Errorf("line %d: unexpected indentation", lines[p.i].no)
	}
	return n, nil
}

type line struct {
	no, indent int
	text       string
}

type parser struct {
	lines []line
	i     int
}

// block parses the lines indented exactly indent as one mapping or list.
func (p *parser) block(indent int) (*Node, error) {
	n := &Node{}
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", l.no)
		}
		if item, ok := strings.CutPrefix(l.text, "- "); ok {
			if n.M != nil {
				return nil, fmt.Errorf("line %d: list item in a mapping", l.no)
			}
			n.List = append(n.List, &Node{S: unquote(item)})
			p.i++
			continue
		}
		key, val, ok := strings.Cut(l.text, ":")
		if !ok || n.List != nil {
			return nil, fmt.Errorf("line %d: want key: value", l.no)
		}
		key = unquote(strings.TrimSpace(key))
		if n.M == nil {
			n.M = map[string]*Node{}
		}
		if _, dup := n.M[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", l.no, key)
		}
		p.i++
		var child *Node
		if val = strings.TrimSpace(val); val != "" {
			child = &Node{S: unquote(val)}
		} else if p.i < len(p.lines) && p.lines[p.i].indent > indent {
			var err error
			if child, err = p.block(p.lines[p.i].indent); err != nil {
				return nil, err
			}
		} else {
			child = &Node{}
		}
		n.M[key] = child
		n.Keys = append(n.Keys, key)
	}
	return n, nil
}

// stripComment removes a " #" comment outside quotes.
func stripComment(line string) string {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#' && (i == 0 || line[i-1] == ' '):
			return line[:i]
		}
	}
	return line
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}
