package installer

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/google/go-cmp/cmp"
	yaml "go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// examples are the templates of testdata/, one per format (docs/installer.md
// shows them).
var examples = map[string]string{"preseed": "preseed", "kickstart": "kickstart", "user-data": "user-data", "ignition": "ignition"}

func example(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s (-want +got):\n%s", name, d)
	}
}

// TestRenderGolden renders each format's example for a machine and for a
// hostile one: the golden files show every value where it lands, escaped.
func TestRenderGolden(t *testing.T) {
	for name := range examples {
		f, _ := FileByName(name)
		for _, hostile := range []bool{false, true} {
			suffix := ".golden"
			if hostile {
				suffix = ".hostile.golden"
			}
			t.Run(name+suffix, func(t *testing.T) {
				out, err := Render(f, example(t, name), Sample(f.Format, hostile))
				if err != nil {
					t.Fatal(err)
				}
				golden(t, name+suffix, out)
			})
		}
	}
}

// TestDefaults: the cloud-init files a profile without templates gets.
func TestDefaults(t *testing.T) {
	p := &bootapiv1.Profile{Name: "p"}
	for _, name := range []string{"meta-data", "user-data", "vendor-data"} {
		t.Run(name, func(t *testing.T) {
			out, _, ok, err := RenderFile(name, p, Sample(YAML, false))
			if err != nil || !ok {
				t.Fatalf("RenderFile = %v, %v", ok, err)
			}
			golden(t, "default-"+name+".golden", out)
		})
	}
	if _, _, ok, _ := RenderFile("preseed", p, Sample(Preseed, false)); ok {
		t.Error("a profile without a preseed has one")
	}
	if _, _, ok, _ := RenderFile("nosuch", p, Sample(Preseed, false)); ok {
		t.Error("a file that does not exist is served")
	}
}

// TestExamplesPassCheck: what the docs show is what the API accepts, and the
// defaults are held to the same check.
func TestExamplesPassCheck(t *testing.T) {
	for name := range examples {
		f, _ := FileByName(name)
		if err := Check("profile.installer."+f.Field, f, example(t, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, tmpl := range map[string]string{"meta-data": defaultMetaData, "user-data": defaultUserData} {
		f, _ := FileByName(name)
		if err := Check("default", f, tmpl); err != nil {
			t.Errorf("default %s: %v", f.Name, err)
		}
	}
}

// TestCheckRefuses: templates that put a value where it is structure, or do
// not render, are refused naming the field.
func TestCheckRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		file, tmpl, want string
	}{
		"preseed question":     {"preseed", "d-i netcfg/{{.Machine.Hostname}} string x\n", "changes the document's structure"},
		"preseed owner":        {"preseed", "{{.Machine.Hostname}} netcfg/hostname string x\n", "changes the document's structure"},
		"kickstart command":    {"kickstart", "{{.Machine.Hostname}}\n", "changes the document's structure"},
		"yaml key":             {"user-data", "#cloud-config\n{{.Machine.Hostname}}: 1\n", "changes the document's structure"},
		"yaml inside quotes":   {"user-data", "#cloud-config\nhostname: \"{{.Machine.Hostname}}\"\n", "YAML"},
		"yaml broken":          {"user-data", "#cloud-config\na: [\n", "not a YAML document"},
		"json inside a string": {"ignition", `{"a": "x{{.Machine.Hostname}}"}`, "JSON"},
		"json key":             {"ignition", `{ {{.Machine.Hostname}}: 1}`, "JSON"},
		"json not json":        {"ignition", `{"a": }`, "not a JSON document"},
		"bad syntax":           {"preseed", "{{.Machine.Hostname", "unclosed action"},
		"call":                 {"preseed", "{{call .X}}", "call is not allowed"},
		"range over int":       {"preseed", "{{range 1000000000}}x{{end}}", "range over"},
		"define":               {"preseed", `{{define "a"}}x{{end}}`, "define"},
		"list as a value":      {"user-data", "#cloud-config\nk: {{.SSHAuthorizedKeys}}\n", "a list: range over it"},
		"no such field":        {"preseed", "{{.Nope}}", "can't evaluate field Nope"},
		"escaper by name":      {"preseed", "{{bootchain_escape .Machine.MAC}}", "not defined"},
	} {
		t.Run(name, func(t *testing.T) {
			f, _ := FileByName(tc.file)
			err := Check("profile.installer."+f.Field, f, tc.tmpl)
			if err == nil {
				t.Fatal("accepted")
			}
			if fe := (*apierr.FieldError)(nil); !errors.As(err, &fe) || fe.Field != "profile.installer."+f.Field {
				t.Errorf("error %v does not name the field", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestEscapers: what each format makes of values, and what it refuses.
func TestEscapers(t *testing.T) {
	for name, tc := range map[string]struct {
		esc     func(any) (string, error)
		in      any
		want    string
		wantErr string
	}{
		"preseed plain":        {escapePreseed, "a b #c", "a b #c", ""},
		"preseed newline":      {escapePreseed, "a\nd-i x string y", "", "control character"},
		"preseed CR":           {escapePreseed, "a\rb", "", "control character"},
		"preseed backslash":    {escapePreseed, `a\`, "", "backslash"},
		"preseed list":         {escapePreseed, []string{"a"}, "", "a list"},
		"kickstart word":       {escapeKickstart, "host-1.example", "host-1.example", ""},
		"kickstart quoted":     {escapeKickstart, "a b", "'a b'", ""},
		"kickstart quote":      {escapeKickstart, "it's", `'it'"'"'s'`, ""},
		"kickstart option":     {escapeKickstart, "--device=eth1", "", "option"},
		"kickstart section":    {escapeKickstart, "%end", "'%end'", ""},
		"kickstart newline":    {escapeKickstart, "a\n%post", "", "control character"},
		"yaml plain":           {escapeYAML, "host1", `"host1"`, ""},
		"yaml indicators":      {escapeYAML, `a: b #c [d, {e}]`, `"a\u003a b \u0023c \u005bd\u002c \u007be\u007d\u005d"`, ""},
		"yaml quote and slash": {escapeYAML, `"\`, `"\"\\"`, ""},
		"yaml newline":         {escapeYAML, "a\n- b", `"a\u000a- b"`, ""},
		"yaml NEL LS BOM":      {escapeYAML, "\u0085\u2028\ufeff", `"\u0085\u2028\ufeff"`, ""},
		"yaml invalid utf-8":   {escapeYAML, "\xff", `"` + "\ufffd" + `"`, ""},
		"yaml number":          {escapeYAML, 3, `"3"`, ""},
		"json string":          {escapeJSON, `a"b</`, `"a\"b\u003c/"`, ""},
		"json list":            {escapeJSON, []string{"a", "b"}, `["a","b"]`, ""},
		"json nil list":        {escapeJSON, []string(nil), `[]`, ""},
		"json map":             {escapeJSON, map[string]string{"k": "v"}, `{"k":"v"}`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := tc.esc(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestYAMLValuesRoundTrip: a YAML reader gets back the value itself.
func TestYAMLValuesRoundTrip(t *testing.T) {
	for _, v := range []string{hostile + hostileLines, "yes", "~", "0x1F", "- a", "&a", "*a", "!!int 3", "'", `\`, "\t"} {
		doc, err := escapeYAML(v)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		if err := yaml.Unmarshal([]byte("k: "+doc), &got); err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if want := strings.ToValidUTF8(v, "\ufffd"); got["k"] != want {
			t.Errorf("%q came back as %q", want, got["k"])
		}
	}
}

// TestRenderRefusesUnsafeValue: a record written around the API (a hostname
// with a line break) gets no preseed at all, not one with an added directive.
func TestRenderRefusesUnsafeValue(t *testing.T) {
	f, _ := FileByName("preseed")
	d := Sample(Preseed, false)
	d.Machine.Hostname = "x\nd-i partman/confirm boolean true"
	if out, err := Render(f, example(t, "preseed"), d); err == nil {
		t.Fatalf("rendered:\n%s", out)
	}
}

func TestCheckKeys(t *testing.T) {
	ok := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbc admin@example", "ecdsa-sha2-nistp256 AAAA x"}
	if err := CheckKeys("k", ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"ssh-ed25519", "AAAA x", "ssh-rsa AAAA\nssh-rsa BBBB", `ssh-rsa AAAA \`} {
		if err := CheckKeys("k", []string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
