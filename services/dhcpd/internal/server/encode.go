package server

import (
	"net"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// bootpMinLen is the least length of a BOOTP message (RFC 951); shorter replies
// are padded, as some relays drop them otherwise.
const bootpMinLen = 300

// magicCookie starts the options (RFC 2131 section 3).
var magicCookie = [4]byte{99, 130, 83, 99}

// encode appends d's wire form to b: byte for byte what d.ToBytes() returns
// (FuzzEncode holds the two to it), without its allocations: a scratch buffer
// per option list, a sorted copy of the option codes, a padding slice. Options
// go in code order, except that the relay agent information (82) comes last
// (RFC 3046); one longer than 255 bytes is split (RFC 3396).
func encode(b []byte, d *dhcpv4.DHCPv4) []byte {
	start := len(b)
	b = append(b, byte(d.OpCode), byte(d.HWType), uint8(len(d.ClientHWAddr)), d.HopCount)
	b = append(b, d.TransactionID[:]...)
	b = append(b, byte(d.NumSeconds>>8), byte(d.NumSeconds), byte(d.Flags>>8), byte(d.Flags))
	for _, ip := range [...]net.IP{d.ClientIPAddr, d.YourIPAddr, d.ServerIPAddr, d.GatewayIPAddr} {
		b = appendIP(b, ip)
	}
	b = appendField(b, d.ClientHWAddr, 16, 16)
	b = appendField(b, []byte(d.ServerHostName), 63, 64)
	b = appendField(b, []byte(d.BootFileName), 127, 128)
	b = append(b, magicCookie[:]...)

	// The codes in order: a handful per reply, sorted by insertion.
	var codes [256]uint8
	n, agent := 0, false
	for c := range d.Options {
		switch c {
		case dhcpv4.OptionPad.Code(), dhcpv4.OptionEnd.Code():
			continue
		case dhcpv4.OptionRelayAgentInformation.Code():
			agent = true
			continue
		}
		i := n
		for i > 0 && codes[i-1] > c {
			codes[i] = codes[i-1]
			i--
		}
		codes[i], n = c, n+1
	}
	if agent {
		codes[n], n = dhcpv4.OptionRelayAgentInformation.Code(), n+1
	}
	for _, c := range codes[:n] {
		v := d.Options[c]
		if len(v) == 0 {
			b = append(b, c, 0)
			continue
		}
		for len(v) > 0 {
			k := min(len(v), 255)
			b = append(b, c, byte(k))
			b = append(b, v[:k]...)
			v = v[k:]
		}
	}
	b = append(b, dhcpv4.OptionEnd.Code())
	for len(b)-start < bootpMinLen {
		b = append(b, 0)
	}
	return b
}

// appendIP appends ip as 4 bytes, zeros when nil (or, where ToBytes would
// panic, not IPv4).
func appendIP(b []byte, ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return append(b, v4...)
	}
	return append(b, 0, 0, 0, 0)
}

// appendField appends the first max bytes of v, zero-filled to size.
func appendField(b, v []byte, max, size int) []byte {
	if len(v) > max {
		v = v[:max]
	}
	b = append(b, v...)
	for i := len(v); i < size; i++ {
		b = append(b, 0)
	}
	return b
}

// replyBufs recycles reply buffers: the pacer returns each after sending it.
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 0, dhcpv4.MaxMessageSize); return &b }}
