package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// escaper returns the function added at the end of every printing action of
// a template of format f: its output is the action's value, made safe where
// the format would read it as structure.
func escaper(f Format) func(any) (string, error) {
	switch f {
	case Preseed:
		return escapePreseed
	case Kickstart:
		return escapeKickstart
	case YAML:
		return escapeYAML
	case JSON:
		return escapeJSON
	}
	return func(any) (string, error) { return "", errors.New("unknown format") }
}

// lineBreaking: the characters some reader of some format takes as the end of
// a line (YAML 1.1 has NEL, LS and PS) or refuses.
func lineBreaking(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || r == '\uFEFF'
}

// escapePreseed: a preseed line is "owner question type value", the value
// running to the end of the line, which a trailing backslash continues. So a
// value may hold anything but a line break or a backslash: those it cannot
// hold without changing the lines, so they are refused, not mangled.
func escapePreseed(v any) (string, error) {
	s, err := oneLine("preseed", v)
	if err != nil {
		return "", err
	}
	if strings.ContainsRune(s, '\\') {
		return "", errors.New("preseed value: a backslash (it would continue the line)")
	}
	return s, nil
}

// oneLine is a value as text that stays on its line: valid UTF-8 without
// control characters, or an error naming the format.
func oneLine(format string, v any) (string, error) {
	s, err := text(v)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(s) {
		return "", errors.New(format + " value: invalid UTF-8")
	}
	for _, r := range s {
		if lineBreaking(r) {
			return "", fmt.Errorf("%s value: control character %U", format, r)
		}
	}
	return s, nil
}

// escapeKickstart: anaconda splits a command line as a POSIX shell would
// (shlex), and %pre/%post bodies are shell. A value is one shell word:
// as it is when it has only characters no shell or shlex treats specially,
// else in single quotes (a quote inside as '"'"'). A line break cannot be
// quoted for a line-based reader, and a word starting with '-' is an option
// however it is quoted: both refused.
func escapeKickstart(v any) (string, error) {
	s, err := oneLine("kickstart", v)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(s, "-") {
		return "", fmt.Errorf("kickstart value %q: starts with '-', it would be an option", s)
	}
	return shellWord(s), nil
}

func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !plainShell(r) }) < 0 {
		return s
	}
	return shellQuote(s)
}

func plainShell(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._/:=@+,-", r)
}

// shellQuote is s as one single-quoted shell word; a template's "sh" for a
// value inside a shell command (a preseed's early_command, a %post line).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// escapeYAML writes a value as a double-quoted YAML scalar, readable by YAML
// 1.1 (PyYAML, what cloud-init uses) and 1.2 alike: every character that is
// not printable there, and every one that could end a plain or flow scalar
// (: # , [ ] { }), is a \u escape. So the value is one scalar where a YAML
// value stands, and harmless text anywhere else (a comment, a block scalar, the
// middle of a plain scalar: build such strings with printf).
func escapeYAML(v any) (string, error) {
	s, err := text(v)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case lineBreaking(r) || strings.ContainsRune(":#,[]{}", r) || (r >= 0xd800 && r < 0xe000) || r == 0xfffe || r == 0xffff:
			if r > 0xffff {
				fmt.Fprintf(&b, `\U%08x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

// escapeJSON writes a value as a JSON value: a string (with <, >, & and the
// line separators escaped), a number, a boolean, a list or an object.
func escapeJSON(v any) (string, error) {
	switch t := v.(type) {
	case string:
		v = strings.ToValidUTF8(t, "\uFFFD")
	case []string:
		l := make([]string, len(t)) // a list with nothing in it is [], not null
		for i, s := range t {
			l[i] = strings.ToValidUTF8(s, "\uFFFD")
		}
		v = l
	case map[string]string:
		m := make(map[string]string, len(t))
		for k, s := range t {
			m[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(s, "\uFFFD")
		}
		v = m
	}
	out, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("JSON value: %v", err)
	}
	return string(out), nil
}
