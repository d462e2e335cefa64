package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// show writes m as -o asks: protojson, YAML of the same fields, or the human
// view table draws.
func (g *Global) show(m proto.Message, table func(w io.Writer) error) error {
	switch g.Output {
	case "json", "yaml":
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
		if err != nil {
			return err
		}
		if g.Output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
			_, err = g.Out.Write(b)
			return err
		}
		_, err = fmt.Fprintf(g.Out, "%s\n", b)
		return err
	}
	return table(g.Out)
}

// writeTable writes a header and rows aligned in columns.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// field is one line of a detail view.
type field struct{ name, value string }

// writeDetail writes one object as "Name:  value" lines, the view of get,
// create and update.
func writeDetail(w io.Writer, fields []field) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f.name, f.value)
	}
	return tw.Flush()
}

// ts formats a timestamp for tables ("-" when unset).
func ts(t *timestamppb.Timestamp) string {
	if t == nil || !t.IsValid() || t.AsTime().IsZero() {
		return "-"
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
}

// ago formats how long ago t was.
func ago(t *timestamppb.Timestamp) string {
	if t == nil || t.AsTime().IsZero() {
		return "-"
	}
	return time.Since(t.AsTime()).Round(time.Second).String() + " ago"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// labelString writes labels as sorted k=v pairs.
func labelString(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// enumName turns an API enum value into the word the CLI uses:
// ACTION_LOCAL_DISK -> local-disk.
func enumName(s, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s, prefix)), "_", "-")
}

// parseEnum is enumName's inverse over values; flag names the flag in errors.
func parseEnum(flag, s, prefix string, values map[string]int32) (int32, error) {
	v, ok := values[prefix+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
	if !ok || v == 0 {
		return 0, usageErrorf("--%s %q: want %s", flag, s, strings.Join(enumWords(prefix, values), ", "))
	}
	return v, nil
}

// enumWords lists an enum's CLI words, in value order, without UNSPECIFIED.
func enumWords(prefix string, values map[string]int32) []string {
	type kv struct {
		name string
		v    int32
	}
	var all []kv
	for n, v := range values {
		if v != 0 {
			all = append(all, kv{n, v})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v < all[j].v })
	words := make([]string, len(all))
	for i, e := range all {
		words[i] = enumName(e.name, prefix)
	}
	return words
}
