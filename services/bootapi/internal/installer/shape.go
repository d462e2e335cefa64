package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Shape is a document's structure without its values, as its format's
// reader sees it: a preseed's directives (owner, question, type), a
// kickstart's commands and their options and its sections' line counts, a
// YAML or JSON document's keys, list lengths and node kinds. A value escaped
// for its format changes the values, never the shape.
func Shape(f Format, doc []byte) (string, error) {
	switch f {
	case Preseed:
		return preseedShape(doc), nil
	case Kickstart:
		return kickstartShape(doc)
	case YAML:
		return yamlShape(doc)
	case JSON:
		return jsonShape(doc)
	}
	return "", errors.New("unknown format")
}

// preseedShape reads a preseed as debconf-set-selections does: a trailing
// backslash joins the next line, '#' starts a comment line, and a directive
// is "owner question type value".
func preseedShape(doc []byte) string {
	var b strings.Builder
	var cur string
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.HasSuffix(line, `\`) {
			cur += strings.TrimSuffix(line, `\`)
			continue
		}
		line, cur = cur+line, ""
		t := strings.TrimLeft(line, " \t")
		if t == "" || t[0] == '#' {
			continue
		}
		fields := strings.Fields(t)
		if len(fields) > 3 {
			fields = fields[:3]
		}
		b.WriteString(strings.Join(fields, " ") + "\n")
	}
	if cur != "" {
		b.WriteString("continued: " + strings.Join(strings.Fields(cur), " ") + "\n")
	}
	return b.String()
}

// kickstartShape: outside a section, each command with its option names
// (tokens from "-", up to "="), split as shlex does; a section ("%pre", ...,
// up to "%end") is its header and its number of lines.
func kickstartShape(doc []byte) (string, error) {
	var b strings.Builder
	section, lines := "", 0
	for n, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSuffix(line, "\r")
		t := strings.TrimSpace(line)
		if section != "" {
			if t == "%end" {
				fmt.Fprintf(&b, "%s (%d lines)\n", section, lines)
				section, lines = "", 0
			} else {
				lines++
			}
			continue
		}
		if t == "" || t[0] == '#' {
			continue
		}
		words, err := shlex(t)
		if err != nil {
			return "", fmt.Errorf("line %d: %v", n+1, err)
		}
		if len(words) == 0 {
			continue
		}
		if strings.HasPrefix(t, "%") {
			section = strings.Fields(t)[0]
			continue
		}
		shape := []string{words[0]}
		for _, w := range words[1:] {
			if strings.HasPrefix(w, "-") {
				name, _, _ := strings.Cut(w, "=")
				shape = append(shape, name)
			} else {
				shape = append(shape, "_")
			}
		}
		b.WriteString(strings.Join(shape, " ") + "\n")
	}
	if section != "" {
		fmt.Fprintf(&b, "%s (%d lines, no %%end)\n", section, lines)
	}
	return b.String(), nil
}

// shlex splits a line as Python's shlex.split(line, comments=True) does
// (POSIX mode): single quotes literal, double quotes with backslash escapes
// of \ " $ `, a backslash outside quotes escaping the next character, '#'
// at the start of a word a comment.
func shlex(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("no closing quotation")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("no closing quotation")
			}
		case c == '\\':
			inWord = true
			if i+1 >= len(s) {
				return nil, errors.New("no escaped character")
			}
			i++
			cur.WriteByte(s[i])
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// yamlShape: every document's node tree with mapping keys and kinds, scalar
// values left out.
func yamlShape(doc []byte) (string, error) {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	var b strings.Builder
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("YAML: %v", err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		yamlNode(&b, &n, 0)
	}
	return b.String(), nil
}

func yamlNode(b *strings.Builder, n *yaml.Node, depth int) {
	if depth > 100 {
		b.WriteString("…\n")
		return
	}
	ind := strings.Repeat(" ", depth)
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			yamlNode(b, c, depth)
		}
	case yaml.MappingNode:
		b.WriteString(ind + "map\n")
		for i := 0; i+1 < len(n.Content); i += 2 {
			fmt.Fprintf(b, "%s %q:\n", ind, n.Content[i].Value)
			yamlNode(b, n.Content[i+1], depth+2)
		}
	case yaml.SequenceNode:
		fmt.Fprintf(b, "%sseq %d\n", ind, len(n.Content))
		for _, c := range n.Content {
			yamlNode(b, c, depth+1)
		}
	case yaml.AliasNode:
		b.WriteString(ind + "alias\n")
	case yaml.ScalarNode:
		b.WriteString(ind + "scalar\n")
	}
}

// jsonShape: one JSON value, its object keys, array lengths and value kinds.
func jsonShape(doc []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", errors.New("JSON: more than one value")
	}
	var b strings.Builder
	jsonValue(&b, v, 0)
	return b.String(), nil
}

func jsonValue(b *strings.Builder, v any, depth int) {
	ind := strings.Repeat(" ", depth)
	switch v := v.(type) {
	case map[string]any:
		b.WriteString(ind + "object\n")
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(b, "%s %q:\n", ind, k)
			jsonValue(b, v[k], depth+2)
		}
	case []any:
		fmt.Fprintf(b, "%sarray %d\n", ind, len(v))
		for _, c := range v {
			jsonValue(b, c, depth+1)
		}
	case string:
		b.WriteString(ind + "string\n")
	case json.Number:
		b.WriteString(ind + "number\n")
	case bool:
		b.WriteString(ind + "bool\n")
	case nil:
		b.WriteString(ind + "null\n")
	}
}
