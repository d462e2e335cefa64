package session_test

import (
	"testing"

	"github.com/bootchain/bootchain/pkg/session"
)

func TestRetransmits(t *testing.T) {
	r := session.NewRetransmits[[4]byte](2)
	steps := []struct {
		name string
		mac  string
		id   [4]byte
		want bool
	}{
		{"first packet", "a", [4]byte{1}, false},
		{"retransmission", "a", [4]byte{1}, true},
		{"new transaction", "a", [4]byte{2}, false},
		{"another machine", "b", [4]byte{2}, false},
		// Two MACs remembered: the third forgets them all.
		{"past the bound", "c", [4]byte{3}, false},
		{"forgotten", "a", [4]byte{2}, false},
	}
	for _, s := range steps {
		if got := r.Seen(s.mac, s.id); got != s.want {
			t.Fatalf("%s: Seen(%s, %v) = %v, want %v", s.name, s.mac, s.id, got, s.want)
		}
	}
}
