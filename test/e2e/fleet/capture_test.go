//go:build linux

package fleet

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// pcapOf wraps Ethernet frames in a pcap file (microsecond, little-endian).
func pcapOf(frames ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 1) // Ethernet
	for i, f := range frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(1700000000+i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// udpFrame is an Ethernet/IPv4/UDP frame around payload (checksums left 0).
func udpFrame(payload []byte) []byte {
	f := make([]byte, 14, 14+28+len(payload))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := make([]byte, 20)
	ip[0], ip[9] = 0x45, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 67)
	binary.BigEndian.PutUint16(udp[2:], 68)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(append(append(f, ip...), udp...), payload...)
}

func TestParseACKs(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:bc:f1:0a")
	ack, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithReply(&dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootRequest}), dhcpv4.WithYourIP(net.ParseIP("198.18.1.100")))
	if err != nil {
		t.Fatal(err)
	}
	ack.OpCode, ack.ClientHWAddr = dhcpv4.OpcodeBootReply, mac
	offer, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
	offer.OpCode = dhcpv4.OpcodeBootReply
	got, err := parseACKs(pcapOf(udpFrame(offer.ToBytes()), udpFrame(ack.ToBytes()), []byte{1, 2, 3}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MAC != mac.String() || got[0].IP != "198.18.1.100" {
		t.Fatalf("ACKs %+v, want one of 198.18.1.100 to %s", got, mac)
	}
	if _, err := parseACKs([]byte("not a pcap file at all....")); err == nil {
		t.Error("a file that is not pcap parsed")
	}
}

// FuzzParseACKs: any bytes (a truncated or corrupt capture) give ACKs or an
// error, never a panic.
func FuzzParseACKs(f *testing.F) {
	f.Add(pcapOf(udpFrame([]byte{2, 1, 6, 0})))
	f.Add(pcapOf([]byte{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseACKs(b)
		parseACKs(pcapOf(b))
		parseACKs(pcapOf(udpFrame(b)))
	})
}
