package main

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOutputFormats: json and yaml carry the same fields, for one object and
// for a list, on every command that shows objects.
func TestOutputFormats(t *testing.T) {
	e := startEnv(t)
	dir := t.TempDir()
	writeFile(t, dir+"/linux", "kernel")
	e.mustRun("artifacts", "upload", dir+"/linux", "--name", "debian/linux")
	e.mustRun("profiles", "create", "debian-12", "--kernel", "debian/linux", "--label", "os=debian")
	e.mustRun("sites", "put", "lab", "--action", "menu")
	e.mustRun("machines", "register", "52:54:00:12:34:56", "--hostname", "node1", "--label", "rack=r12")
	e.mustRun("jobs", "create", "--mac", "52:54:00:12:34:56", "--profile", "debian-12")
	for _, args := range [][]string{
		{"machines", "get", "52:54:00:12:34:56"}, {"machines", "list"},
		{"profiles", "get", "debian-12"}, {"profiles", "list"}, {"profiles", "fields"},
		{"sites", "get", "lab"}, {"sites", "list"},
		{"jobs", "list"}, {"artifacts", "stat", "debian/linux"}, {"artifacts", "list"},
	} {
		var fromJSON, fromYAML any
		j := e.mustRun(append(args, "-o", "json")...)
		if err := json.Unmarshal([]byte(j), &fromJSON); err != nil {
			t.Errorf("%q -o json: %v\n%s", args, err, j)
			continue
		}
		y := e.mustRun(append(args, "--output=yaml")...)
		yj, err := yaml.YAMLToJSON([]byte(y))
		if err == nil {
			err = json.Unmarshal(yj, &fromYAML)
		}
		if err != nil || !reflect.DeepEqual(fromJSON, fromYAML) {
			t.Errorf("%q: yaml %v differs from json:\n%s\n%s", args, err, y, j)
		}
	}

	// A site written as -o yaml prints it can be put back with -f.
	y := e.mustRun("sites", "get", "lab", "-o", "yaml")
	writeFile(t, dir+"/lab.yaml", strings.Replace(y, "name: lab", "name: ignored", 1))
	e.mustRun("sites", "put", "lab2", "-f", dir+"/lab.yaml", "--tftp", "10.0.0.7")
	out := e.mustRun("sites", "get", "lab2")
	for _, w := range []string{"Name:           lab2", "Default:        menu", "TFTP server:    10.0.0.7"} {
		if !strings.Contains(out, w) {
			t.Errorf("sites put -f: no %q in\n%s", w, out)
		}
	}
}
