// Package httprange parses HTTP Range request headers (RFC 9110 section 14) for
// byte ranges, the one range unit artifactstore serves.
//
//	rs, err := httprange.Parse(r.Header.Get("Range"), size)
//	switch {
//	case errors.Is(err, httprange.ErrUnsatisfiable), errors.Is(err, httprange.ErrSyntax):
//		// 416, Content-Range: bytes */size
//	case rs == nil:
//		// no usable Range: send the whole representation
//	}
package httprange

import (
	"errors"
	"fmt"
	"strings"
)

// MaxRanges bounds the ranges of one request; more is treated as malformed (a
// client that wants a thousand pieces of a kernel is not a boot loader).
const MaxRanges = 64

// Errors from Parse.
var (
	// ErrSyntax: a bytes range set that does not parse.
	ErrSyntax = errors.New("malformed byte range")
	// ErrUnsatisfiable: well-formed, but no range overlaps the content.
	ErrUnsatisfiable = errors.New("range not satisfiable")
)

// Range is a satisfiable byte range, clamped to the content.
type Range struct {
	Start, Length int64
}

// End is the offset of the last byte.
func (r Range) End() int64 { return r.Start + r.Length - 1 }

// ContentRange is the Content-Range header value for r within size bytes.
func (r Range) ContentRange(size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", r.Start, r.End(), size)
}

// Unsatisfied is the Content-Range header value of a 416 answer.
func Unsatisfied(size int64) string { return fmt.Sprintf("bytes */%d", size) }

// Parse parses the value of a Range header for content of size bytes. It returns
// nil, nil when there is no header or its unit is not "bytes" (the caller then
// ignores it and sends everything). Ranges come back in request order, clamped to
// the content; ranges that start past the end are dropped, and when none is left the
// error is ErrUnsatisfiable.
func Parse(header string, size int64) ([]Range, error) {
	if header == "" {
		return nil, nil
	}
	unit, set, ok := strings.Cut(header, "=")
	if !ok {
		return nil, fmt.Errorf("%w: %q: no '='", ErrSyntax, header)
	}
	if !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, nil
	}
	var out []Range
	n := 0
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			// RFC 9110 list syntax allows empty elements; they mean nothing.
			continue
		}
		if n++; n > MaxRanges {
			return nil, fmt.Errorf("%w: more than %d ranges", ErrSyntax, MaxRanges)
		}
		first, last, ok := strings.Cut(spec, "-")
		if !ok {
			return nil, fmt.Errorf("%w: %q: no '-'", ErrSyntax, spec)
		}
		if first == "" {
			// Suffix range: the last N bytes.
			suffix, err := number(last)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", ErrSyntax, spec, err)
			}
			if suffix == 0 || size == 0 {
				continue
			}
			suffix = min(suffix, size)
			out = append(out, Range{Start: size - suffix, Length: suffix})
			continue
		}
		start, err := number(first)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrSyntax, spec, err)
		}
		end := size - 1
		if last != "" {
			e, err := number(last)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", ErrSyntax, spec, err)
			}
			if e < start {
				return nil, fmt.Errorf("%w: %q: last byte before first", ErrSyntax, spec)
			}
			end = min(e, size-1)
		}
		if start >= size {
			continue
		}
		out = append(out, Range{Start: start, Length: end - start + 1})
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %q: no ranges", ErrSyntax, header)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q of %d bytes", ErrUnsatisfiable, header, size)
	}
	return out, nil
}

// number parses a non-negative decimal of at most 18 digits (no sign, no spaces).
func number(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	if len(s) > 18 {
		return 0, errors.New("number too large")
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a digit: %q", c)
		}
		v = v*10 + int64(c-'0')
	}
	return v, nil
}

// Total is the sum of the ranges' lengths.
func Total(rs []Range) int64 {
	var t int64
	for _, r := range rs {
		t += r.Length
	}
	return t
}
