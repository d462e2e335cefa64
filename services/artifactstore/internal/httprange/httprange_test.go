package httprange

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := map[string]struct {
		header string
		size   int64
		want   []Range
		err    error
	}{
		"none":                {"", 100, nil, nil},
		"other unit ignored":  {"items=0-5", 100, nil, nil},
		"first 100":           {"bytes=0-99", 1000, []Range{{0, 100}}, nil},
		"unit case":           {"Bytes=0-0", 10, []Range{{0, 1}}, nil},
		"open end":            {"bytes=500-", 1000, []Range{{500, 500}}, nil},
		"suffix":              {"bytes=-10", 1000, []Range{{990, 10}}, nil},
		"suffix larger":       {"bytes=-5000", 1000, []Range{{0, 1000}}, nil},
		"end clamped":         {"bytes=900-5000", 1000, []Range{{900, 100}}, nil},
		"multi":               {"bytes=0-0, 2-3,-1", 10, []Range{{0, 1}, {2, 2}, {9, 1}}, nil},
		"spaces and empties":  {"bytes= 0-1 , ,\t4-5", 10, []Range{{0, 2}, {4, 2}}, nil},
		"one of two past end": {"bytes=0-1,50-60", 10, []Range{{0, 2}}, nil},
		"past end":            {"bytes=10-", 10, nil, ErrUnsatisfiable},
		"suffix zero":         {"bytes=-0", 10, nil, ErrUnsatisfiable},
		"empty content":       {"bytes=0-", 0, nil, ErrUnsatisfiable},
		"empty content sfx":   {"bytes=-5", 0, nil, ErrUnsatisfiable},
		"no equals":           {"bytes 0-1", 10, nil, ErrSyntax},
		"no dash":             {"bytes=5", 10, nil, ErrSyntax},
		"reversed":            {"bytes=5-1", 10, nil, ErrSyntax},
		"negative":            {"bytes=--1", 10, nil, ErrSyntax},
		"sign":                {"bytes=+1-2", 10, nil, ErrSyntax},
		"garbage":             {"bytes=a-b", 10, nil, ErrSyntax},
		"only commas":         {"bytes=,,", 10, nil, ErrSyntax},
		"overflow":            {"bytes=0-99999999999999999999", 10, nil, ErrSyntax},
		"empty spec":          {"bytes=", 10, nil, ErrSyntax},
		"too many":            {"bytes=" + strings.Repeat("0-0,", MaxRanges+1), 10, nil, ErrSyntax},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.header, tc.size)
			if !errors.Is(err, tc.err) || (err != nil) != (tc.err != nil) {
				t.Fatalf("Parse(%q, %d) error = %v, want %v", tc.header, tc.size, err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q, %d) (-want +got):\n%s", tc.header, tc.size, diff)
			}
		})
	}
}

func TestContentRange(t *testing.T) {
	if got := (Range{Start: 0, Length: 100}).ContentRange(1000); got != "bytes 0-99/1000" {
		t.Errorf("ContentRange = %q", got)
	}
	if got := Unsatisfied(7); got != "bytes */7" {
		t.Errorf("Unsatisfied = %q", got)
	}
}

// FuzzParse checks that whatever the header, Parse never panics, every range it
// returns lies inside the content and is not empty, and a re-rendering of the ranges
// parses to the same ranges.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=5-", "bytes=0-0,2-3,-1", "bytes=9999999999999999-", "bytes=,", "x=1-2"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		rs, err := Parse(header, size)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrUnsatisfiable) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if rs != nil {
				t.Fatalf("ranges with an error")
			}
			return
		}
		if len(rs) > MaxRanges {
			t.Fatalf("%d ranges", len(rs))
		}
		var parts []string
		for _, r := range rs {
			if r.Start < 0 || r.Length <= 0 || r.Start+r.Length > size || r.End() >= size {
				t.Fatalf("range %+v outside content of %d bytes (header %q)", r, size, header)
			}
			parts = append(parts, fmt.Sprintf("%d-%d", r.Start, r.End()))
		}
		if rs == nil {
			return
		}
		again, err := Parse("bytes="+strings.Join(parts, ","), size)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if diff := cmp.Diff(rs, again); diff != "" {
			t.Fatalf("re-parse differs:\n%s", diff)
		}
	})
}
