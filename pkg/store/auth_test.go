package store_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/store"
)

// An etcd password never crosses the network in plaintext, and needs a user. (A
// real etcd with TLS and auth: pkg/daemon's TestExternalEtcdWithTLSAndAuth.)
func TestConfigRefusesAPasswordInPlaintextOffLoopback(t *testing.T) {
	tlsCfg := &tls.Config{}
	for name, c := range map[string]struct {
		cfg store.Config
		ok  bool
	}{
		"plaintext remote":   {store.Config{Endpoints: []string{"198.18.0.5:2379"}, Username: "u", Password: "pw-x"}, false},
		"plaintext URL":      {store.Config{Endpoints: []string{"http://etcd.example:2379"}, Username: "u", Password: "pw-x"}, false},
		"one remote of two":  {store.Config{Endpoints: []string{"127.0.0.1:2379", "198.18.0.5:2379"}, Username: "u", Password: "pw-x"}, false},
		"password, no user":  {store.Config{Endpoints: []string{"127.0.0.1:2379"}, Password: "pw-x"}, false},
		"plaintext loopback": {store.Config{Endpoints: []string{"127.0.0.1:2379", "localhost:2379", "[::1]:2379"}, Username: "u", Password: "pw-x"}, true},
		"TLS remote":         {store.Config{Endpoints: []string{"198.18.0.5:2379"}, Username: "u", Password: "pw-x", TLS: tlsCfg}, true},
		"https URL":          {store.Config{Endpoints: []string{"https://etcd.example:2379"}, Username: "u", Password: "pw-x", TLS: tlsCfg}, true},
		"no auth, plaintext": {store.Config{Endpoints: []string{"198.18.0.5:2379"}}, true},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: Validate = %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw-x") {
			t.Errorf("%s: error holds the password: %v", name, err)
		}
	}
}
