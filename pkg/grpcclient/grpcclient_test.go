package grpcclient_test

import (
	"testing"

	"github.com/bootchain/bootchain/pkg/grpcclient"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9080": true, "127.1.2.3:9080": true, "[::1]:9080": true, "localhost:9080": true,
		"LOCALHOST:1": true, "dns:///localhost:9080": true, "unix:///run/bootchain.sock": true,
		":9080": false, "0.0.0.0:9080": false, "[::]:9080": false, "198.18.0.1:9080": false,
		"bootapi.example:9080": false, "localhost.example:9080": false, "dns:///10.0.0.1:9080": false, "": false,
	} {
		if got := grpcclient.Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
