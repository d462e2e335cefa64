package installer

import (
	"encoding/json"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// fuzzShape renders the example of name with every value of the data set to
// v and requires the document's shape to be the benign sample's: a value can
// be refused (preseed and kickstart refuse line breaks), never change the
// structure. It returns the rendered document for format-specific checks.
func fuzzShape(t *testing.T, name, tmpl, want string, v string) []byte {
	f, _ := FileByName(name)
	d := Sample(f.Format, false)
	d.Machine.MAC, d.Machine.Hostname, d.Machine.Site = v, v, v
	d.Machine.Labels = map[string]string{"role": v, "domain": v, "mirror": v}
	d.Site.Name, d.Profile.Name, d.Job.ID = v, v, v
	d.SSHAuthorizedKeys = []string{v}
	out, err := Render(f, tmpl, d)
	if err != nil {
		if f.Format == YAML || f.Format == JSON {
			t.Fatalf("%s refused %q: %v", name, v, err)
		}
		return nil
	}
	got, err := Shape(f.Format, out)
	if err != nil {
		t.Fatalf("value %q: %v\n%s", v, err, out)
	}
	if got != want {
		t.Fatalf("value %q changed the shape (%s):\n%s", v, firstDiff(want, got), out)
	}
	return out
}

func fuzzSetup(f *testing.F, name string) (tmpl, want string) {
	tmpl = example(f, name)
	file, _ := FileByName(name)
	out, err := Render(file, tmpl, Sample(file.Format, false))
	if err != nil {
		f.Fatal(err)
	}
	want, err = Shape(file.Format, out)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"host1", hostile, hostile + hostileLines, "a\\", "\\\nd-i x string y", "%end", "--x", "'", "\"", "a: b", "\xff\xfe", "\u2028", "}", "]", "{{"} {
		f.Add(s)
	}
	return tmpl, want
}

func FuzzPreseed(f *testing.F) {
	tmpl, want := fuzzSetup(f, "preseed")
	f.Fuzz(func(t *testing.T, v string) {
		out := fuzzShape(t, "preseed", tmpl, want, v)
		if out != nil && !strings.Contains(string(out), "netcfg/hostname string "+v+"\n") {
			t.Fatalf("hostname %q not carried as it is:\n%s", v, out)
		}
	})
}

func FuzzKickstart(f *testing.F) {
	tmpl, want := fuzzSetup(f, "kickstart")
	f.Fuzz(func(t *testing.T, v string) {
		out := fuzzShape(t, "kickstart", tmpl, want, v)
		if out == nil {
			return
		}
		// shlex gives the value back whole.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "network ") {
				w, err := shlex(line)
				if err != nil || len(w) != 3 || w[2] != "--hostname="+v {
					t.Fatalf("network line %q split as %q (%v)", line, w, err)
				}
			}
		}
	})
}

func FuzzUserData(f *testing.F) {
	tmpl, want := fuzzSetup(f, "user-data")
	f.Fuzz(func(t *testing.T, v string) {
		out := fuzzShape(t, "user-data", tmpl, want, v)
		var doc struct {
			Hostname string `yaml:"hostname"`
		}
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		if w := strings.ToValidUTF8(v, "\ufffd"); doc.Hostname != w {
			t.Fatalf("hostname %q came back as %q", w, doc.Hostname)
		}
	})
}

func FuzzIgnition(f *testing.F) {
	tmpl, want := fuzzSetup(f, "ignition")
	f.Fuzz(func(t *testing.T, v string) {
		out := fuzzShape(t, "ignition", tmpl, want, v)
		var doc struct {
			Passwd struct {
				Users []struct {
					Keys []string `json:"sshAuthorizedKeys"`
				} `json:"users"`
			} `json:"passwd"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		if w := strings.ToValidUTF8(v, "\ufffd"); len(doc.Passwd.Users) != 1 || len(doc.Passwd.Users[0].Keys) != 1 || doc.Passwd.Users[0].Keys[0] != w {
			t.Fatalf("key %q came back as %+v", w, doc.Passwd.Users)
		}
	})
}
