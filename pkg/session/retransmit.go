package session

import "sync"

// Retransmits tells a DHCP client's retransmitted first packet (a DISCOVER or
// a Solicit: the same transaction ID again) from a new boot attempt, which
// OpenFirmwareAttempt needs. It remembers the last ID per MAC; at max MACs it
// forgets them all (a forgotten retransmission merely opens a new attempt).
type Retransmits[ID comparable] struct {
	mu   sync.Mutex
	max  int
	last map[string]ID
}

// NewRetransmits remembers up to max MACs.
func NewRetransmits[ID comparable](max int) *Retransmits[ID] {
	return &Retransmits[ID]{max: max, last: map[string]ID{}}
}

// Seen records id as mac's last transaction and reports whether it was the
// last one already.
func (r *Retransmits[ID]) Seen(mac string, id ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, seen := r.last[mac]
	if len(r.last) >= r.max {
		r.last = map[string]ID{}
	}
	r.last[mac] = id
	return seen && last == id
}
