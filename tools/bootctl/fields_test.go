package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// templateDataSource is bootapi's definition of what a cmdline template gets.
const templateDataSource = "../../services/bootapi/internal/script/script.go"

// TestTemplateFieldsMatchBootapi reads script.TemplateData from bootapi's
// source (bootctl cannot import an internal package) and checks that
// "profiles fields" lists exactly its exported fields and value methods.
func TestTemplateFieldsMatchBootapi(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), templateDataSource, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	var walk func(prefix string, st *ast.StructType)
	walk = func(prefix string, st *ast.StructType) {
		for _, fl := range st.Fields.List {
			for _, n := range fl.Names {
				if !n.IsExported() {
					continue
				}
				if sub, ok := fl.Type.(*ast.StructType); ok {
					walk(prefix+"."+n.Name, sub)
				} else {
					have = append(have, prefix+"."+n.Name)
				}
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.Name == "TemplateData" {
			walk("", ts.Type.(*ast.StructType))
		}
		if fd, ok := n.(*ast.FuncDecl); ok && fd.Recv != nil && fd.Name.IsExported() {
			if id, ok := fd.Recv.List[0].Type.(*ast.Ident); ok && id.Name == "TemplateData" {
				have = append(have, "."+fd.Name.Name)
			}
		}
		return true
	})
	if len(have) == 0 {
		t.Fatalf("no TemplateData in %s", templateDataSource)
	}
	var listed []string
	for _, tf := range templateFields {
		listed = append(listed, fieldPath.FindString(tf.expr))
	}
	slices.Sort(have)
	slices.Sort(listed)
	if !slices.Equal(have, listed) {
		t.Errorf("profiles fields lists %q; bootapi's TemplateData has %q", listed, have)
	}
}

var fieldPath = regexp.MustCompile(`(\.[A-Z]\w*)+`)

// TestTemplateFieldsRender renders every listed field through bootapi: a
// profile whose cmdline uses them all, booted by a machine with a job.
func TestTemplateFieldsRender(t *testing.T) {
	e := startEnv(t)
	const mac = "52:54:00:12:34:56"
	var cmdline []string
	for i, tf := range templateFields {
		cmdline = append(cmdline, "f"+string(rune('a'+i))+"="+strings.ReplaceAll(tf.expr, "KEY", "rack"))
	}
	e.mustRun("profiles", "create", "p", "--kernel", "https://example.org/linux", "--cmdline", strings.Join(cmdline, " "))
	e.mustRun("sites", "put", "lab")
	e.mustRun("machines", "register", mac, "--hostname", "node1", "--site", "lab", "--label", "rack=r12")
	e.mustRun("jobs", "create", "--mac", mac, "--profile", "p")
	script := e.bootScript(mac)
	id := jobRE.FindStringSubmatch(script)[1]
	want := map[string]string{
		".Machine.MAC": mac, ".Machine.Hostname": "node1", ".Machine.Site": "lab", ".Machine.Labels": "r12",
		".Profile.Name": "p", ".Job.ID": id,
	}
	for i, tf := range templateFields {
		if fieldPath.FindString(tf.expr) == ".InstallerURL" {
			re := regexp.MustCompile("f" + string(rune('a'+i)) + `=http://\S+/installer/v1/` + id + `/[0-9a-f]{64}/FILE `)
			if !re.MatchString(script) {
				t.Errorf("%s: no installer URL of job %s in the script:\n%s", tf.expr, id, script)
			}
			continue
		}
		v, ok := want[fieldPath.FindString(tf.expr)]
		if !ok {
			t.Errorf("%s: no value to expect; add it to this test", tf.expr)
			continue
		}
		if arg := "f" + string(rune('a'+i)) + "=" + v + " "; !strings.Contains(script, arg) {
			t.Errorf("%s: no %q in the script:\n%s", tf.expr, arg, script)
		}
	}
}
