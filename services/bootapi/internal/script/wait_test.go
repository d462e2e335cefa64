package script_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// The wait script asks the config URL again after the wait, with the
// bootstrap's facts, and falls back to the next device when bootapi is gone.
func TestWait(t *testing.T) {
	u, _ := url.Parse("http://198.18.0.1:8080/ipxe/v1/config")
	s, err := script.Wait(u, "52:54:00:12:34:56", 6500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!ipxe\n",
		"\nsleep 7\n",
		"\nchain --autofree http://198.18.0.1:8080/ipxe/v1/config?mac=${net0/mac:hexhyp}&arch=${buildarch:uristring}",
		" || goto giveup\nexit\n:giveup\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("wait script lacks %q:\n%s", want, s)
		}
	}
}
