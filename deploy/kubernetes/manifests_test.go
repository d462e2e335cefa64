// Package kubernetes holds bootchain's Kubernetes manifests (kustomize: core, a site
// base and one overlay per site). Its test validates them offline: no cluster and no
// kustomize binary, only the YAML, the kustomizations' references and the flags of
// the binaries built from this tree.
package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// obj is one parsed YAML document.
type obj map[string]any

func (o obj) str(path ...string) string {
	v, _ := o.get(path...).(string)
	return v
}

func (o obj) get(path ...string) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func (o obj) list(path ...string) []obj {
	l, _ := o.get(path...).([]any)
	out := make([]obj, 0, len(l))
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, obj(m))
		}
	}
	return out
}

func (o obj) strs(path ...string) []string {
	l, _ := o.get(path...).([]any)
	var out []string
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func (o obj) id() string { return o.str("kind") + "/" + o.str("metadata", "name") }

// parseFile splits a multi-document YAML file and parses every document.
func parseFile(t *testing.T, path string) []obj {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []obj
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var o obj
		if err := yaml.UnmarshalStrict([]byte(doc), &o); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if o == nil {
			continue
		}
		out = append(out, o)
	}
	return out
}

// kust is a kustomization resolved to the resources it builds (before patches).
type kust struct {
	dir       string
	resources []obj
	// generated ConfigMaps: name -> env keys.
	configMaps map[string]map[string]string
}

var (
	knownKinds = []string{"Namespace", "Deployment", "StatefulSet", "DaemonSet", "Service"}
	images     = regexp.MustCompile(`^localhost/bootchain-(artifactstore|bootapi|dhcpd|tftpd):[A-Za-z0-9._-]+$`)
)

// load reads the kustomization in dir, its resources (files or other
// kustomizations), generators, and checks its patches against the resources.
func load(t *testing.T, dir string) *kust {
	t.Helper()
	docs := parseFile(t, filepath.Join(dir, "kustomization.yaml"))
	if len(docs) != 1 {
		t.Fatalf("%s: want one kustomization document, got %d", dir, len(docs))
	}
	k := docs[0]
	if k.str("kind") != "Kustomization" || k.str("apiVersion") != "kustomize.config.k8s.io/v1beta1" {
		t.Fatalf("%s: not a Kustomization: %s %s", dir, k.str("apiVersion"), k.str("kind"))
	}
	out := &kust{dir: dir, configMaps: map[string]map[string]string{}}
	for _, r := range k.strs("resources") {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: resource %s: %v", dir, r, err)
		}
		if st.IsDir() {
			sub := load(t, p)
			out.resources = append(out.resources, sub.resources...)
			for n, kv := range sub.configMaps {
				out.configMaps[n] = kv
			}
			continue
		}
		for _, o := range parseFile(t, p) {
			if !slices.Contains(knownKinds, o.str("kind")) {
				t.Errorf("%s: %s: kind %q not expected", dir, r, o.str("kind"))
			}
			if o.str("apiVersion") == "" || o.str("metadata", "name") == "" {
				t.Errorf("%s: %s: %s has no apiVersion or name", dir, r, o.id())
			}
			out.resources = append(out.resources, o)
		}
	}
	if ns := k.str("namespace"); ns != "" {
		// kustomize puts every namespaced resource in it: the Namespace must be there.
		if !slices.ContainsFunc(out.resources, func(o obj) bool { return o.id() == "Namespace/"+ns }) {
			t.Errorf("%s: namespace %s is not among its resources", dir, ns)
		}
	}
	for _, g := range k.list("configMapGenerator") {
		name := g.str("name")
		kv := map[string]string{}
		if g.str("behavior") == "merge" {
			base, ok := out.configMaps[name]
			if !ok {
				t.Errorf("%s: configMapGenerator %s merges into nothing", dir, name)
			}
			for key, v := range base {
				kv[key] = v
			}
		}
		for _, e := range g.strs("envs") {
			b, err := os.ReadFile(filepath.Join(dir, e))
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				key, v, ok := strings.Cut(line, "=")
				if !ok {
					t.Errorf("%s/%s: %q is not KEY=VALUE", dir, e, line)
				}
				kv[key] = v
			}
		}
		out.configMaps[name] = kv
	}
	for _, p := range k.list("patches") {
		path := p.str("path")
		if path == "" {
			t.Errorf("%s: a patch without a path", dir)
			continue
		}
		for _, patch := range parseFile(t, filepath.Join(dir, path)) {
			i := slices.IndexFunc(out.resources, func(o obj) bool { return o.id() == patch.id() })
			if i < 0 {
				t.Errorf("%s: patch %s targets %s, which the base does not have", dir, path, patch.id())
				continue
			}
			applyPatch(t, dir+"/"+path, out.resources[i], patch)
		}
	}
	for _, img := range k.list("images") {
		if !images.MatchString(img.str("name") + ":x") {
			t.Errorf("%s: images: %q is no bootchain image", dir, img.str("name"))
		}
	}
	return out
}

// applyPatch merges a strategic-merge patch the way kustomize does for what the
// overlays use: maps merge, containers and env merge by name; a container the base
// lacks is an error (the patch would add a container without an image).
func applyPatch(t *testing.T, where string, base, patch obj) {
	t.Helper()
	var merge func(path string, dst, src map[string]any)
	merge = func(path string, dst, src map[string]any) {
		for k, sv := range src {
			switch s := sv.(type) {
			case map[string]any:
				d, ok := dst[k].(map[string]any)
				if !ok {
					d = map[string]any{}
					dst[k] = d
				}
				merge(path+"."+k, d, s)
			case []any:
				if k != "containers" && k != "env" {
					dst[k] = s
					continue
				}
				d, _ := dst[k].([]any)
				for _, se := range s {
					sm := se.(map[string]any)
					i := slices.IndexFunc(d, func(de any) bool { return de.(map[string]any)["name"] == sm["name"] })
					switch {
					case i >= 0:
						merge(fmt.Sprintf("%s.%s[%v]", path, k, sm["name"]), d[i].(map[string]any), sm)
					case k == "containers":
						t.Errorf("%s: %s: container %v is not in the base", where, path, sm["name"])
					default:
						d = append(d, sm)
					}
				}
				dst[k] = d
			default:
				dst[k] = sv
			}
		}
	}
	merge(patch.id(), base, patch)
}

// flagsOf builds a service and returns the flags its -h lists.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllSubmatch(out, -1) {
		flags[string(m[1])] = true
	}
	if len(flags) < 10 {
		t.Fatalf("%s -h listed %d flags:\n%s", bin, len(flags), out)
	}
	return flags
}

func buildServices(t *testing.T) map[string]map[string]bool {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := map[string]map[string]bool{}
	for _, svc := range []string{"artifactstore", "bootapi", "dhcpd", "tftpd"} {
		bin := filepath.Join(dir, svc)
		cmd := exec.Command("go", "build", "-o", bin, "./services/"+svc+"/cmd/"+svc)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("go build %s: %v\n%s", svc, err, stderr.String())
		}
		out[svc] = flagsOf(t, bin)
	}
	return out
}

// envName is the flag a BOOTCHAIN_* variable sets (pkg/config.EnvName, reversed).
func envName(v string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "BOOTCHAIN_")), "_", "-")
}

// portOf is the port of a listen address such as ":8080" or "0.0.0.0:69".
func portOf(addr string) int {
	i := strings.LastIndex(addr, ":")
	p, _ := strconv.Atoi(addr[i+1:])
	return p
}

func TestManifests(t *testing.T) {
	flags := buildServices(t)
	overlays, err := filepath.Glob("overlays/*")
	if err != nil || len(overlays) < 2 {
		t.Fatalf("want at least two site overlays, got %v (%v)", overlays, err)
	}
	sites := map[string]string{} // site name -> overlay
	for _, dir := range append([]string{"core"}, overlays...) {
		t.Run(dir, func(t *testing.T) {
			k := load(t, dir)
			workloads := 0
			for _, o := range k.resources {
				switch o.str("kind") {
				case "Deployment", "StatefulSet", "DaemonSet":
					workloads++
					checkWorkload(t, k, o, flags)
				case "Service":
					checkService(t, k, o)
				}
			}
			if workloads == 0 {
				t.Errorf("%s: no workload", dir)
			}
			if dir == "core" {
				return
			}
			site := k.configMaps["bootchain-site"]["BOOTCHAIN_SITE"]
			if site != filepath.Base(dir) {
				t.Errorf("%s: BOOTCHAIN_SITE %q, want the overlay's name", dir, site)
			}
			if other, dup := sites[site]; dup {
				t.Errorf("%s and %s both serve site %s", dir, other, site)
			}
			sites[site] = dir
			for _, name := range []string{"dhcpd", "tftpd"} {
				ds := find(k, "DaemonSet/"+name)
				if ds == nil {
					t.Errorf("%s: no DaemonSet %s", dir, name)
					continue
				}
				if got := ds.str("spec", "template", "spec", "nodeSelector", "bootchain.io/site"); got != site {
					t.Errorf("%s: %s runs on nodes of site %q, want %q", dir, name, got, site)
				}
			}
			if dhcpd := find(k, "DaemonSet/dhcpd"); dhcpd != nil {
				env := containerEnv(dhcpd.list("spec", "template", "spec", "containers")[0])
				for _, v := range []string{"BOOTCHAIN_INTERFACE", "BOOTCHAIN_SUBNET", "BOOTCHAIN_POOL"} {
					if env[v] == "" {
						t.Errorf("%s: dhcpd has no %s", dir, v)
					}
				}
			}
		})
	}
}

func find(k *kust, id string) obj {
	for _, o := range k.resources {
		if o.id() == id {
			return o
		}
	}
	return nil
}

func containerEnv(c obj) map[string]string {
	env := map[string]string{}
	for _, e := range c.list("env") {
		v := e.str("value")
		if v == "" && e.get("valueFrom") != nil {
			v = "(from)"
		}
		env[e.str("name")] = v
	}
	return env
}

// checkWorkload: a known image, env naming real flags, named ports matching the
// listen addresses, probes on declared ports (HTTP /healthz where the service has
// it), and the privileges each service needs and no more.
func checkWorkload(t *testing.T, k *kust, o obj, flags map[string]map[string]bool) {
	t.Helper()
	spec := obj(o.get("spec", "template", "spec").(map[string]any))
	if o.str("kind") != "DaemonSet" && o.get("spec", "selector", "matchLabels") == nil {
		t.Errorf("%s: no selector", o.id())
	}
	sel, _ := o.get("spec", "selector", "matchLabels").(map[string]any)
	labels, _ := o.get("spec", "template", "metadata", "labels").(map[string]any)
	for key, v := range sel {
		if labels[key] != v {
			t.Errorf("%s: selector %s=%v does not match the pod labels", o.id(), key, v)
		}
	}
	volumes := map[string]bool{}
	for _, v := range spec.list("volumes") {
		volumes[v.str("name")] = true
	}
	for _, tmpl := range o.list("spec", "volumeClaimTemplates") {
		volumes[tmpl.str("metadata", "name")] = true
	}
	containers := spec.list("containers")
	if len(containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", o.id(), len(containers))
	}
	c := containers[0]
	m := images.FindStringSubmatch(c.str("image"))
	if m == nil {
		t.Fatalf("%s: image %q is not a bootchain image", o.id(), c.str("image"))
	}
	svc := m[1]
	env := containerEnv(c)
	for _, ef := range c.list("envFrom") {
		name := ef.str("configMapRef", "name")
		kv, ok := k.configMaps[name]
		if !ok {
			t.Errorf("%s: envFrom ConfigMap %q is not generated", o.id(), name)
		}
		for key, v := range kv {
			if _, set := env[key]; !set {
				env[key] = v
			}
		}
	}
	for v := range env {
		if !strings.HasPrefix(v, "BOOTCHAIN_") {
			t.Errorf("%s: variable %s is not a BOOTCHAIN_ flag", o.id(), v)
		} else if !flags[svc][envName(v)] {
			t.Errorf("%s: %s names no flag --%s of %s", o.id(), v, envName(v), svc)
		}
	}
	for _, vm := range c.list("volumeMounts") {
		if !volumes[vm.str("name")] {
			t.Errorf("%s: mount of undeclared volume %s", o.id(), vm.str("name"))
		}
	}
	if env["BOOTCHAIN_PKI_DIR"] == "" {
		t.Errorf("%s: no BOOTCHAIN_PKI_DIR (gRPC off loopback needs TLS)", o.id())
	}

	// Ports: each listen address has its declared, named container port.
	ports := map[string]int{}
	for _, p := range c.list("ports") {
		n, _ := p.get("containerPort").(float64)
		ports[p.str("name")] = int(n)
	}
	want := map[string]string{"grpc": "BOOTCHAIN_GRPC_ADDR"}
	switch svc {
	case "bootapi", "artifactstore":
		want["http"] = "BOOTCHAIN_HTTP_ADDR"
	case "tftpd":
		want["tftp"] = "BOOTCHAIN_ADDR"
		want["http"] = "BOOTCHAIN_HTTP_ADDR"
	case "dhcpd":
		want["http"] = "BOOTCHAIN_HTTP_ADDR"
		if ports["dhcp"] != 67 {
			t.Errorf("%s: dhcp port %d", o.id(), ports["dhcp"])
		}
	}
	for name, v := range want {
		if env[v] == "" {
			t.Errorf("%s: %s not set", o.id(), v)
		} else if ports[name] == 0 || ports[name] != portOf(env[v]) {
			t.Errorf("%s: port %s=%d, but %s=%s", o.id(), name, ports[name], v, env[v])
		}
	}

	// Probes.
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		p := obj(map[string]any{})
		if m, ok := c.get(probe).(map[string]any); ok {
			p = m
		} else {
			t.Errorf("%s: no %s", o.id(), probe)
			continue
		}
		// Every service has an HTTP health endpoint; dhcpd and tftpd also
		// say when they are ready.
		path := "/healthz"
		if probe == "readinessProbe" && (svc == "dhcpd" || svc == "tftpd") {
			path = "/readyz"
		}
		if p.str("httpGet", "path") != path || p.str("httpGet", "port") != "http" {
			t.Errorf("%s: %s is not GET %s on the http port: %v", o.id(), probe, path, p)
		}
	}

	// Privileges.
	sc := obj(map[string]any{})
	if m, ok := c.get("securityContext").(map[string]any); ok {
		sc = m
	}
	if sc.get("allowPrivilegeEscalation") != false || sc.get("readOnlyRootFilesystem") != true {
		t.Errorf("%s: wants allowPrivilegeEscalation false and readOnlyRootFilesystem true", o.id())
	}
	if drop := sc.strs("capabilities", "drop"); !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("%s: capabilities drop %v, want ALL", o.id(), drop)
	}
	add := sc.strs("capabilities", "add")
	slices.Sort(add)
	host := spec.get("hostNetwork") == true
	switch svc {
	case "dhcpd":
		if !slices.Equal(add, []string{"NET_BIND_SERVICE", "NET_RAW"}) || !host {
			t.Errorf("%s: dhcpd wants hostNetwork and NET_BIND_SERVICE, NET_RAW; has %v, hostNetwork %v", o.id(), add, host)
		}
	case "tftpd":
		if !slices.Equal(add, []string{"NET_BIND_SERVICE"}) || !host {
			t.Errorf("%s: tftpd wants hostNetwork and NET_BIND_SERVICE; has %v, hostNetwork %v", o.id(), add, host)
		}
	default:
		if len(add) > 0 || host {
			t.Errorf("%s: %s needs no capability and no host network; has %v, hostNetwork %v", o.id(), svc, add, host)
		}
		if spec.get("securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: %s should run as non-root", o.id(), svc)
		}
	}
}

// checkService: its selector picks a workload, and each targetPort names a port
// of that workload's container.
func checkService(t *testing.T, k *kust, s obj) {
	t.Helper()
	sel, _ := s.get("spec", "selector").(map[string]any)
	if len(sel) == 0 {
		t.Errorf("%s: no selector", s.id())
		return
	}
	for _, o := range k.resources {
		labels, _ := o.get("spec", "template", "metadata", "labels").(map[string]any)
		if labels == nil {
			continue
		}
		match := true
		for key, v := range sel {
			match = match && labels[key] == v
		}
		if !match {
			continue
		}
		names := map[string]bool{}
		for _, c := range o.list("spec", "template", "spec", "containers") {
			for _, p := range c.list("ports") {
				names[p.str("name")] = true
			}
		}
		for _, p := range s.list("spec", "ports") {
			if !names[p.str("targetPort")] {
				t.Errorf("%s: targetPort %q is no port of %s", s.id(), p.str("targetPort"), o.id())
			}
		}
		return
	}
	t.Errorf("%s: selector %v matches no workload", s.id(), sel)
}
