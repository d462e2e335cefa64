package ui

import (
	"fmt"
	"html/template"
	"maps"
	"slices"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// funcs are the templates' helpers; now is the clock "ago" counts from.
func funcs(now func() time.Time) template.FuncMap {
	return template.FuncMap{
		"ago": func(ts *timestamppb.Timestamp) string {
			if ts == nil {
				return "never"
			}
			return round(now().Sub(ts.AsTime())).String() + " ago"
		},
		"when": func(ts *timestamppb.Timestamp) string {
			if ts == nil {
				return ""
			}
			return ts.AsTime().UTC().Format(time.RFC3339)
		},
		"dur":  func(d *durationpb.Duration) string { return round(d.AsDuration()).String() },
		"span": func(d time.Duration) string { return round(d).String() },
		"offset": func(d time.Duration) string {
			return "+" + round(d).String()
		},
		"size":         size,
		"sessionState": sessionState,
		"jobState":     jobState,
		"diagClass": func(c bootapiv1.DiagnosisClass) string {
			return slicesTrim(c.String())
		},
		"attrs": sortedLabels,
		// hostname is the UI's (New replaces it); parsing needs the name.
		"hostname": func(string) string { return "" },
		"add":      func(a, b int) int { return a + b },
		// repeats is how many times a folded hop happened in all.
		"repeats": func(n uint32) int { return int(n) + 1 },
		"bar":     func(f float64) string { return fmt.Sprintf("%.1f", f) },
	}
}

// round shortens a duration for a person: microseconds below a millisecond,
// milliseconds below a second, tenths of a second below a minute, seconds
// above.
func round(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

func size(n int64) string {
	switch {
	case n <= 0:
		return ""
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func slicesTrim(s string) string {
	const p = "DIAGNOSIS_CLASS_"
	if len(s) > len(p) && s[:len(p)] == p {
		s = s[len(p):]
	}
	return s
}

// sortedLabels renders a map as k=v strings in key order.
func sortedLabels(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}
