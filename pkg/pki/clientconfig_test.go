package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientConfigPathOrder(t *testing.T) {
	env := map[string]string{}
	get := func(k string) string { return env[k] }
	env["HOME"] = "/home/op"
	if p, _ := ClientConfigPath(get); p != "/home/op/.config/bootchain/bootctl.json" {
		t.Fatalf("home: %s", p)
	}
	env["XDG_CONFIG_HOME"] = "/xdg"
	if p, _ := ClientConfigPath(get); p != "/xdg/bootchain/bootctl.json" {
		t.Fatalf("xdg: %s", p)
	}
	env[ConfigEnv] = "/etc/bootchain/ci.json"
	if p, _ := ClientConfigPath(get); p != "/etc/bootchain/ci.json" {
		t.Fatalf("%s: %s", ConfigEnv, p)
	}
}

func TestClientConfigRoundTripAndReplaceRule(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "bootctl.json")
	if !MayReplaceClientConfig(p, "/data") {
		t.Fatal("no file: may not write")
	}
	c := ClientConfig{BootAPI: "localhost:9080", CA: filepath.Join(dir, "ca.crt"), DataDir: "/data"}
	if err := WriteClientConfig(p, c); err != nil {
		t.Fatal(err)
	}
	got, err := ReadClientConfig(p)
	if err != nil || got != c {
		t.Fatalf("read back %+v %v", got, err)
	}
	if !MayReplaceClientConfig(p, "/data") || MayReplaceClientConfig(p, "/other") {
		t.Fatal("replace rule for bootchain's own file")
	}
	// A missing file the config names is an error naming the field and the file.
	err = got.CheckFiles(p)
	if err == nil || !strings.Contains(err.Error(), `"ca"`) || !strings.Contains(err.Error(), c.CA) {
		t.Fatalf("CheckFiles: %v", err)
	}
	os.WriteFile(c.CA, []byte("x"), 0o644)
	if err := got.CheckFiles(p); err != nil {
		t.Fatal(err)
	}
	// A person's file (no data_dir) or one that does not parse is kept.
	os.WriteFile(p, []byte(`{"bootapi":"h:1"}`), 0o600)
	if MayReplaceClientConfig(p, "/data") {
		t.Fatal("may replace a person's own config")
	}
	os.WriteFile(p, []byte(`{"bootapi":`), 0o600)
	if MayReplaceClientConfig(p, "/data") {
		t.Fatal("may replace a config that does not parse")
	}
}

func TestParseClientConfigRefusesUnknownFields(t *testing.T) {
	for _, in := range []string{`{"bootapi":"a","certt":"x"}`, `{} {}`, `[]`, `{"ca": 1}`} {
		if _, err := ParseClientConfig([]byte(in)); err == nil {
			t.Errorf("%s: parsed", in)
		}
	}
}

func FuzzParseClientConfig(f *testing.F) {
	f.Add([]byte(`{"bootapi":"localhost:9080","ca":"/a/ca.crt","cert":"/a/admin.crt","key":"/a/admin.key","data_dir":"/a"}`))
	f.Add([]byte(`{"token_file":"/t","server_name":"x"}`))
	f.Add([]byte(`{"x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseClientConfig(b)
		if err != nil {
			return
		}
		// What parses is written back and parses to the same config.
		p := filepath.Join(t.TempDir(), "c.json")
		if err := WriteClientConfig(p, c); err != nil {
			t.Fatal(err)
		}
		again, err := ReadClientConfig(p)
		if err != nil || again != c {
			t.Fatalf("round trip: %+v -> %+v (%v)", c, again, err)
		}
	})
}
