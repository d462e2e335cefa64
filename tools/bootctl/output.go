package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// printJSON writes messages as JSON: one object, or an array for a list.
func printJSON(g *Global, msgs ...proto.Message) error {
	mo := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}
	if len(msgs) == 1 {
		b, err := mo.Marshal(msgs[0])
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(g.Out, string(b))
		return err
	}
	parts := make([]string, 0, len(msgs))
	for _, m := range msgs {
		b, err := mo.Marshal(m)
		if err != nil {
			return err
		}
		parts = append(parts, string(b))
	}
	_, err := fmt.Fprintf(g.Out, "[%s]\n", strings.Join(parts, ",\n"))
	return err
}

// printTable writes a header and rows aligned in columns.
func printTable(g *Global, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
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
