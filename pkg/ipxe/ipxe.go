// Package ipxe renders iPXE scripts that no value can break out of.
//
// iPXE expands ${...} in a whole line, repeatedly, before it splits the line into
// arguments at white space, and treats "||" and "&&" tokens as command separators
// and a line starting with ':' as a label. There is no quoting to hide behind. So
// every value that reaches a script goes through one of three doors:
//
//   - URL: percent-encoded, so '$', '{', '|', white space and control characters
//     cannot appear raw.
//   - Word: one argument; rejected if it holds white space, control characters,
//     "${", "||", "&&", or starts with '#' or ':'.
//   - Text: free text for echo and menu labels; white space is folded to single
//     spaces and the same sequences are rejected.
//
// Builder collects errors instead of writing an unsafe line, and Script returns the
// first one: a script with a bad value is never produced.
//
//	var b ipxe.Builder
//	b.Line("kernel", ipxe.URL(kernelURL), ipxe.Word("console=ttyS0"))
//	script, err := b.Script()
package ipxe

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrUnsafe is wrapped by every rejection of a value.
var ErrUnsafe = errors.New("ipxe: unsafe value")

// Arg is one rendered piece of a command line; build it with URL, Word, Text, Raw.
type Arg struct {
	s   string
	err error
}

// Raw is trusted script text written by bootchain itself (a command, a label, a
// variable reference). Never pass user data.
func Raw(s string) Arg { return Arg{s: s} }

// Word is a single argument from data: a kernel parameter, a file name.
func Word(s string) Arg {
	if err := CheckWord(s); err != nil {
		return Arg{err: err}
	}
	return Arg{s: s}
}

// Text is free text from data for echo and menu labels.
func Text(s string) Arg {
	t := strings.Join(strings.FieldsFunc(s, unicode.IsSpace), " ")
	if err := checkCommon(t); err != nil {
		return Arg{err: err}
	}
	return Arg{s: t}
}

// URL renders u with every byte outside a conservative set percent-encoded.
func URL(u *url.URL) Arg {
	if u == nil {
		return Arg{err: fmt.Errorf("%w: nil URL", ErrUnsafe)}
	}
	if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "tftp" {
		return Arg{err: fmt.Errorf("%w: URL scheme %q", ErrUnsafe, u.Scheme)}
	}
	return Arg{s: EscapeURL(u.String())}
}

// EscapeURL percent-encodes every byte of s that could mean something to iPXE's
// parser. Bytes that url.URL.String already encoded stay as they are.
func EscapeURL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		// "&&" would end the command: keep the first '&' (a query separator) and
		// encode the second.
		if c == '&' && i > 0 && s[i-1] == '&' {
			b.WriteString("%26")
			continue
		}
		if urlSafe(c) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func urlSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	// '&' is safe alone: only "&&" separates commands (see EscapeURL).
	return strings.IndexByte("-._~:/?#[]@!'()*+,;=%&", c) >= 0
}

// CheckWord reports why s cannot be one iPXE argument.
func CheckWord(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty argument", ErrUnsafe)
	}
	for _, r := range s {
		if unicode.IsSpace(r) {
			return fmt.Errorf("%w: white space in %q", ErrUnsafe, s)
		}
	}
	return checkCommon(s)
}

func checkCommon(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: invalid UTF-8", ErrUnsafe)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%w: control character %U", ErrUnsafe, r)
		}
	}
	for _, bad := range []string{"${", "||", "&&"} {
		if strings.Contains(s, bad) {
			return fmt.Errorf("%w: %q in %q", ErrUnsafe, bad, s)
		}
	}
	if strings.HasPrefix(s, "#") || strings.HasPrefix(s, ":") {
		return fmt.Errorf("%w: %q starts with %q", ErrUnsafe, s, s[:1])
	}
	// A token that is exactly '|' or '&' could read as a separator in some
	// builds; '$' right before the end could join with a following '{'.
	if s == "|" || s == "&" || strings.HasSuffix(s, "$") {
		return fmt.Errorf("%w: %q", ErrUnsafe, s)
	}
	return nil
}

// Builder writes a script line by line. The zero value is ready; the first line is
// "#!ipxe".
type Builder struct {
	b   strings.Builder
	err error
}

// Line writes one command of args separated by spaces.
func (b *Builder) Line(cmd string, args ...Arg) {
	parts := make([]string, 0, len(args)+1)
	parts = append(parts, cmd)
	for _, a := range args {
		if a.err != nil {
			if b.err == nil {
				b.err = a.err
			}
			return
		}
		if a.s != "" {
			parts = append(parts, a.s)
		}
	}
	b.raw(strings.Join(parts, " "))
}

// Comment writes a comment; the text is checked like Text.
func (b *Builder) Comment(text string) {
	t := Text(text)
	if t.err != nil {
		if b.err == nil {
			b.err = t.err
		}
		return
	}
	b.raw("# " + t.s)
}

// Label writes ":name"; name must be bootchain's own (letters, digits, '-', '_', '.').
func (b *Builder) Label(name string) {
	if !IsLabel(name) {
		if b.err == nil {
			b.err = fmt.Errorf("%w: label %q", ErrUnsafe, name)
		}
		return
	}
	b.raw(":" + name)
}

// IsLabel reports whether s can be a label or a menu item key.
func IsLabel(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (b *Builder) raw(line string) {
	if b.b.Len() == 0 {
		b.b.WriteString("#!ipxe\n")
	}
	b.b.WriteString(line)
	b.b.WriteByte('\n')
}

// Err is the first error met so far.
func (b *Builder) Err() error { return b.err }

// Script returns the script, or the first unsafe value met.
func (b *Builder) Script() (string, error) {
	if b.err != nil {
		return "", b.err
	}
	if b.b.Len() == 0 {
		b.raw("# empty")
	}
	return b.b.String(), nil
}

// String returns the rendered argument or its error.
func (a Arg) String() (string, error) { return a.s, a.err }
