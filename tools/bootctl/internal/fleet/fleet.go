// Package fleet reads, writes and compares the declarative fleet file of
// "bootctl apply" and "bootctl export": sites, profiles and machines in the
// JSON names of their protos, as YAML or JSON, in one document or several.
package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Kinds in the order they are written: a profile must exist before a site or
// machine names it, and a site before its machines. Deletes go in reverse.
const (
	KindProfile = "profile"
	KindSite    = "site"
	KindMachine = "machine"
)

// Kinds lists every kind in dependency order.
var Kinds = []string{KindProfile, KindSite, KindMachine}

// listKey is each kind's key in the file.
var listKey = map[string]string{KindProfile: "profiles", KindSite: "sites", KindMachine: "machines"}

// Fleet is the desired state a file declares.
type Fleet struct {
	Profiles []*bootapiv1.Profile
	Sites    []*bootapiv1.Site
	Machines []*bootapiv1.Machine
	// Listed holds the kinds the file has a list for, even an empty one:
	// only those are pruned.
	Listed map[string]bool
}

// MaxSize bounds a file: a fleet of thousands of machines is far smaller.
const MaxSize = 64 << 20

// Parse reads a fleet file: YAML (or JSON) documents separated by "---", each
// a map with the lists "sites", "profiles" and "machines". Lists of the same
// kind in several documents add up. Output-only fields are dropped; a name
// given twice, an unknown key or field is an error naming where it is.
func Parse(b []byte) (*Fleet, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("file is larger than %d bytes", MaxSize)
	}
	f := &Fleet{Listed: map[string]bool{}}
	seen := map[string]bool{}
	for i, doc := range splitDocs(b) {
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		j = bytes.TrimSpace(j)
		if len(j) == 0 || string(j) == "null" {
			continue
		}
		var lists map[string][]json.RawMessage
		if err := json.Unmarshal(j, &lists); err != nil {
			return nil, fmt.Errorf("document %d: want a map of lists (sites, profiles, machines): %w", i+1, err)
		}
		for key, items := range lists {
			kind := ""
			for k, v := range listKey {
				if v == key {
					kind = k
				}
			}
			if kind == "" {
				return nil, fmt.Errorf("document %d: unknown key %q (want sites, profiles or machines)", i+1, key)
			}
			f.Listed[kind] = true
			for n, raw := range items {
				where := fmt.Sprintf("document %d: %s[%d]", i+1, key, n)
				m := newOf(kind)
				if err := protojson.Unmarshal(raw, m); err != nil {
					return nil, fmt.Errorf("%s: %w", where, err)
				}
				Normalize(m)
				name := Name(m)
				if name == "" {
					return nil, fmt.Errorf("%s: %s is missing", where, nameField(kind))
				}
				if seen[kind+"/"+name] {
					return nil, fmt.Errorf("%s: %s %s is declared twice", where, kind, name)
				}
				seen[kind+"/"+name] = true
				switch m := m.(type) {
				case *bootapiv1.Profile:
					f.Profiles = append(f.Profiles, m)
				case *bootapiv1.Site:
					f.Sites = append(f.Sites, m)
				case *bootapiv1.Machine:
					f.Machines = append(f.Machines, m)
				}
			}
		}
	}
	return f, nil
}

// splitDocs splits YAML at lines that are "---" (optionally followed by a
// comment or space).
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		t := bytes.TrimRight(line, "\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) || bytes.HasPrefix(t, []byte("---\t")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

func newOf(kind string) proto.Message {
	switch kind {
	case KindProfile:
		return &bootapiv1.Profile{}
	case KindSite:
		return &bootapiv1.Site{}
	}
	return &bootapiv1.Machine{}
}

func nameField(kind string) string {
	if kind == KindMachine {
		return "mac"
	}
	return "name"
}

// Kind is the kind of m.
func Kind(m proto.Message) string {
	switch m.(type) {
	case *bootapiv1.Profile:
		return KindProfile
	case *bootapiv1.Site:
		return KindSite
	}
	return KindMachine
}

// Name is m's identity: a profile's or site's name, a machine's MAC.
func Name(m proto.Message) string {
	switch m := m.(type) {
	case *bootapiv1.Profile:
		return m.GetName()
	case *bootapiv1.Site:
		return m.GetName()
	case *bootapiv1.Machine:
		return m.GetMac()
	}
	return ""
}

// Normalize clears what the server sets (timestamps, revisions, discovery, facts) and
// writes a MAC as bootapi stores it, so that a file and the server's copy
// compare equal when they declare the same thing.
func Normalize(m proto.Message) {
	switch m := m.(type) {
	case *bootapiv1.Profile:
		m.CreateTime, m.UpdateTime = nil, nil
	case *bootapiv1.Site:
		m.UpdateTime, m.Revision = nil, 0
	case *bootapiv1.Machine:
		m.CreateTime, m.UpdateTime, m.LastSeenTime = nil, nil, nil
		m.Discovered, m.Facts = false, nil
		if hw, err := net.ParseMAC(m.GetMac()); err == nil && len(hw) == 6 {
			m.Mac = hw.String()
		}
	}
}

// fields is m as a map of its JSON fields, the form diffs and exports use.
func fields(m proto.Message) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		// Only invalid UTF-8 fails, which protojson.Unmarshal and gRPC refuse first.
		panic(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	return v
}

// Change is one field that differs: From is absent ("") on a create, To on a
// delete.
type Change struct {
	Field, From, To string
}

// Op is what applying does to one object.
type Op struct {
	Action  string // create, update, delete
	Kind    string
	Name    string
	Want    proto.Message // nil on delete
	Changes []Change
}

// Plan is the list of operations, in the order they must run.
type Plan struct {
	Ops       []Op
	Unchanged int
}

// Current is what the server has, per kind.
type Current struct {
	Profiles []*bootapiv1.Profile
	Sites    []*bootapiv1.Site
	Machines []*bootapiv1.Machine
}

// Diff plans how to take cur to want: creates and updates in dependency
// order, then, with prune, deletes in reverse order of the kinds the file
// lists. Discovered machines are never pruned: they are what the site saw
// boot, not configuration.
func Diff(want *Fleet, cur *Current, prune bool) *Plan {
	p := &Plan{}
	byKind := func(kind string, f *Fleet, c *Current) ([]proto.Message, []proto.Message) {
		switch kind {
		case KindProfile:
			return msgs(f.Profiles), msgs(c.Profiles)
		case KindSite:
			return msgs(f.Sites), msgs(c.Sites)
		}
		return msgs(f.Machines), msgs(c.Machines)
	}
	for _, kind := range Kinds {
		w, c := byKind(kind, want, cur)
		have := map[string]proto.Message{}
		for _, m := range c {
			m = proto.Clone(m)
			Normalize(m)
			have[Name(m)] = m
		}
		for _, m := range w {
			old, ok := have[Name(m)]
			ch := changes("", fields(old), fields(m))
			switch {
			case !ok:
				p.Ops = append(p.Ops, Op{Action: "create", Kind: kind, Name: Name(m), Want: m, Changes: ch})
			case len(ch) > 0:
				p.Ops = append(p.Ops, Op{Action: "update", Kind: kind, Name: Name(m), Want: m, Changes: ch})
			default:
				p.Unchanged++
			}
		}
	}
	if !prune {
		return p
	}
	for _, kind := range slices.Backward(Kinds) {
		if !want.Listed[kind] {
			continue
		}
		w, c := byKind(kind, want, cur)
		named := map[string]bool{}
		for _, m := range w {
			named[Name(m)] = true
		}
		var dels []Op
		for _, m := range c {
			if mm, ok := m.(*bootapiv1.Machine); ok && mm.GetDiscovered() {
				continue
			}
			n := proto.Clone(m)
			Normalize(n)
			if !named[Name(n)] {
				dels = append(dels, Op{Action: "delete", Kind: kind, Name: Name(n)})
			}
		}
		sort.Slice(dels, func(i, j int) bool { return dels[i].Name < dels[j].Name })
		p.Ops = append(p.Ops, dels...)
	}
	return p
}

func msgs[T proto.Message](l []T) []proto.Message {
	out := make([]proto.Message, len(l))
	for i, m := range l {
		out[i] = m
	}
	return out
}

// changes lists the leaf fields that differ between a and b, sorted, with
// nested objects (such as a site's dhcp) compared field by field.
func changes(prefix string, a, b map[string]any) []Change {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var out []Change
	for _, k := range sorted {
		av, aok := a[k]
		bv, bok := b[k]
		am, aIsMap := av.(map[string]any)
		bm, bIsMap := bv.(map[string]any)
		// Labels are a map too, and diff key by key like any object.
		if (aIsMap || !aok) && (bIsMap || !bok) && (aIsMap || bIsMap) {
			out = append(out, changes(prefix+k+".", am, bm)...)
			continue
		}
		if aok && bok && jsonText(av) == jsonText(bv) {
			continue
		}
		// Lists of the same length (a subnet's pools, say) diff element by
		// element, so that one changed address shows as that address.
		if al, ok := av.([]any); ok {
			if bl, ok := bv.([]any); ok && len(al) == len(bl) {
				for i := range al {
					out = append(out, changes(prefix, map[string]any{fmt.Sprintf("%s[%d]", k, i): al[i]}, map[string]any{fmt.Sprintf("%s[%d]", k, i): bl[i]})...)
				}
				continue
			}
		}
		c := Change{Field: prefix + k}
		if aok {
			c.From = jsonText(av)
		}
		if bok {
			c.To = jsonText(bv)
		}
		out = append(out, c)
	}
	return out
}

func jsonText(v any) string {
	b, _ := json.Marshal(v) // values decoded from JSON always encode
	return string(b)
}

// Render writes the plan as "bootctl apply --dry-run" shows it:
//
//   - profile debian-12
//     kernel: {"artifact":"debian/linux"}
//     ~ site lab
//     extraCmdline: "ip=dhcp" -> "quiet"
//   - machine 52:54:00:00:00:99
func (p *Plan) Render() string {
	var b strings.Builder
	sign := map[string]string{"create": "+", "update": "~", "delete": "-"}
	counts := map[string]int{}
	for _, op := range p.Ops {
		counts[op.Action]++
		fmt.Fprintf(&b, "%s %s %s\n", sign[op.Action], op.Kind, op.Name)
		for _, c := range op.Changes {
			switch {
			case op.Action == "create":
				fmt.Fprintf(&b, "    %s: %s\n", c.Field, c.To)
			case c.From == "":
				fmt.Fprintf(&b, "    %s: (unset) -> %s\n", c.Field, c.To)
			case c.To == "":
				fmt.Fprintf(&b, "    %s: %s -> (unset)\n", c.Field, c.From)
			default:
				fmt.Fprintf(&b, "    %s: %s -> %s\n", c.Field, c.From, c.To)
			}
		}
	}
	fmt.Fprintf(&b, "%d to create, %d to change, %d to delete, %d unchanged\n",
		counts["create"], counts["update"], counts["delete"], p.Unchanged)
	return b.String()
}

// Marshal writes cur in the file format, every list sorted by name, as YAML
// or, with asJSON, JSON; Parse reads it back to the same objects.
func Marshal(cur *Current, asJSON bool) ([]byte, error) {
	doc := map[string][]map[string]any{}
	add := func(kind string, l []proto.Message) {
		items := []map[string]any{}
		for _, m := range l {
			m = proto.Clone(m)
			Normalize(m)
			items = append(items, fields(m))
		}
		sort.Slice(items, func(i, j int) bool {
			return fmt.Sprint(items[i][nameField(kind)]) < fmt.Sprint(items[j][nameField(kind)])
		})
		doc[listKey[kind]] = items
	}
	add(KindProfile, msgs(cur.Profiles))
	add(KindSite, msgs(cur.Sites))
	add(KindMachine, msgs(cur.Machines))
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	if asJSON {
		return append(b, '\n'), nil
	}
	return yaml.JSONToYAML(b)
}
