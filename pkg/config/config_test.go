package config

import (
	"flag"
	"strings"
	"testing"
)

func TestFlagsWinOverEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	site := fs.String("site", "default", "")
	eps := StringList{"127.0.0.1:2379"}
	fs.Var(&eps, "etcd-endpoints", "")
	addr := fs.String("bootapi-http-addr", ":8080", "")
	t.Setenv("BOOTCHAIN_SITE", "from-env")
	t.Setenv("BOOTCHAIN_ETCD_ENDPOINTS", "a:1, b:2")
	t.Setenv("BOOTCHAIN_BOOTAPI_HTTP_ADDR", ":9999")
	if err := Parse(fs, []string{"--bootapi-http-addr", ":7777"}); err != nil {
		t.Fatal(err)
	}
	if *site != "from-env" || len(eps) != 2 || eps[1] != "b:2" || *addr != ":7777" {
		t.Fatalf("site %q endpoints %v addr %q", *site, eps, *addr)
	}
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Duration("stall-after", 0, "")
	t.Setenv("BOOTCHAIN_STALL_AFTER", "soon")
	err := Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "BOOTCHAIN_STALL_AFTER") {
		t.Fatalf("err = %v", err)
	}
}
