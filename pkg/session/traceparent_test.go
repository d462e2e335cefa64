package session_test

import (
	"testing"

	"github.com/bootchain/bootchain/pkg/session"
)

func TestTraceparentRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sc, err := session.Parse(tp)
	if err != nil {
		t.Fatal(err)
	}
	if got := session.Format(sc); got != tp {
		t.Fatalf("Format(Parse(%q)) = %q", tp, got)
	}
	for _, bad := range []string{"", "00-xyz", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"} {
		if _, err := session.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00--")
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := session.Parse(s)
		if err != nil {
			return
		}
		if back, err := session.Parse(session.Format(sc)); err != nil || back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}
