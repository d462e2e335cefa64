package grub

import (
	"fmt"
	"strings"
)

// Lex splits one line of a GRUB config into words the way GRUB's lexer
// (grub-core/script/yylex.l) does, for the constructs it has: single quotes
// (literal), double quotes (with $ expansion and \ escapes), \ escapes
// outside quotes, # comments at the start of a word, and the separators ';',
// '|', '&', '{', '}' outside quotes. It reports every unquoted or
// double-quoted '$' (an expansion) and every separator, so a test can check
// that only bootchain's own ones appear.
func Lex(line string) (words []string, expansions []string, seps []string, err error) {
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, nil, nil, fmt.Errorf("unterminated single quote in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) {
					i++
				} else if line[i] == '$' {
					expansions = append(expansions, expansionAt(line, i))
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, nil, nil, fmt.Errorf("unterminated double quote in %q", line)
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(line) {
				return nil, nil, nil, fmt.Errorf("line continuation in %q", line)
			}
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == '$':
			e := expansionAt(line, i)
			expansions = append(expansions, e)
			cur.WriteString(e)
			i += len(e) - 1
			inWord = true
		case c == '#' && !inWord:
			return words, expansions, seps, nil
		case c == ' ' || c == '\t':
			flush()
		case strings.IndexByte(";|&{}<>", c) >= 0:
			flush()
			seps = append(seps, string(c))
		case c < 0x20 || c == 0x7f:
			return nil, nil, nil, fmt.Errorf("control character %#x in %q", c, line)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, expansions, seps, nil
}

func expansionAt(line string, i int) string {
	j := i + 1
	if j < len(line) && line[j] == '{' {
		if k := strings.IndexByte(line[j:], '}'); k >= 0 {
			return line[i : j+k+1]
		}
		return line[i:]
	}
	for j < len(line) && (line[j] == '_' || 'a' <= line[j] && line[j] <= 'z' || 'A' <= line[j] && line[j] <= 'Z' || '0' <= line[j] && line[j] <= '9') {
		j++
	}
	return line[i:j]
}
