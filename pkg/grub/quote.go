// Package grub writes GRUB's config language safely and names the files
// bootchain serves GRUB over TFTP. GRUB (Debian's signed one behind shim under
// Secure Boot, or GRUB on arm64) reads grub/grub.cfg from the folder it was
// loaded from; bootchain's is the same for every machine (Bootstrap) and
// sources the machine's own, which tftpd gets from bootapi:
//
//	grub/grub.cfg                         Bootstrap
//	grub/grub.cfg-<mac>                   the machine's config (ConfigName)
//	grub/profile/<profile>/grub.cfg-<mac> a menu choice (ChoiceName)
//	artifacts/<artifact ref>              a kernel or initrd (ArtifactPath)
//
// Quote makes any value one GRUB word or refuses it; Lex reads a line back
// the way GRUB's lexer does, so tests can check what a config holds.
package grub

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrUnsafe wraps every value the renderer refuses to write.
var ErrUnsafe = errors.New("grub: unsafe value")

// Quote returns s as one GRUB word that the lexer reads back as exactly s.
//
// GRUB's script lexer (grub-core/script/yylex.l) treats a single-quoted
// string literally: no '$' expansion, no escape, no separator (';', '|',
// '&', '{', '}', newline) and no comment inside. A single quote cannot appear
// between single quotes, so it is written as '\” (close, an escaped quote
// outside, reopen), as in a POSIX shell. Control characters (a newline would
// continue the quoted string onto the next line, which a reader of the file
// does not expect) and invalid UTF-8 cannot be written safely and are refused.
func Quote(s string) (string, error) {
	if err := check(s); err != nil {
		return "", err
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

func check(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: invalid UTF-8 in %q", ErrUnsafe, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%w: control character %U in %q", ErrUnsafe, r, s)
		}
	}
	return nil
}

// CheckKernelArg reports why s cannot be one kernel argument passed by GRUB:
// besides what Quote refuses, white space (it would split the argument) and
// the characters GRUB's linux loader escapes with a backslash on the command
// line it builds ('"', '\”, '\\'; grub-core/lib/cmdline.c), which Linux's
// parser does not undo: a '"' would start a quoted span in the kernel's own
// parser and join the next arguments into one.
func CheckKernelArg(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty kernel argument", ErrUnsafe)
	}
	if err := check(s); err != nil {
		return err
	}
	if i := strings.IndexAny(s, " \t\"'\\"); i >= 0 {
		return fmt.Errorf("%w: %q in kernel argument %q", ErrUnsafe, s[i], s)
	}
	return nil
}

// Builder writes a GRUB config line by line. Words are quoted with Quote; the
// first error is kept and returned by Config.
type Builder struct {
	b      strings.Builder
	err    error
	indent int
}

// Line writes the command cmd (bootchain's own, written as is) with args,
// each quoted.
func (b *Builder) Line(cmd string, args ...string) {
	b.write(cmd, args, "")
}

// Open writes "cmd args... {" (menuentry) or "if cmd args...; then" and
// indents what follows until Close.
func (b *Builder) Open(cmd string, args []string, opener string) {
	b.write(cmd, args, opener)
	b.indent++
}

// Close ends a block with closer ("}" or "fi").
func (b *Builder) Close(closer string) {
	b.indent--
	b.raw(closer)
}

func (b *Builder) write(cmd string, args []string, tail string) {
	parts := make([]string, 0, len(args)+2)
	parts = append(parts, cmd)
	for _, a := range args {
		q, err := Quote(a)
		if err != nil {
			if b.err == nil {
				b.err = err
			}
			return
		}
		parts = append(parts, q)
	}
	if tail != "" {
		parts = append(parts, tail)
	}
	b.raw(strings.Join(parts, " "))
}

// PrefixLine writes "cmd ${prefix}/<rest>" for name, a TFTP name under Dir:
// GRUB's prefix is the folder it read grub.cfg from, on the server it booted
// from.
func (b *Builder) PrefixLine(cmd, name string) {
	q, err := Quote(strings.TrimPrefix(name, Dir+"/"))
	if err != nil {
		if b.err == nil {
			b.err = err
		}
		return
	}
	b.raw(cmd + " ${prefix}/" + q)
}

// Comment writes "# text". A comment ends at the end of its line; text with a
// control character (a newline) is refused.
func (b *Builder) Comment(text string) {
	if err := check(text); err != nil {
		if b.err == nil {
			b.err = err
		}
		return
	}
	b.raw("# " + text)
}

func (b *Builder) raw(line string) {
	b.b.WriteString(strings.Repeat("\t", max(b.indent, 0)))
	b.b.WriteString(line)
	b.b.WriteByte('\n')
}

// Err is the first error of the config so far.
func (b *Builder) Err() error { return b.err }

// Config returns the config written, or the first error.
func (b *Builder) Config() (string, error) {
	if b.err != nil {
		return "", b.err
	}
	return b.b.String(), nil
}
