package server

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// encodeSeeds are replies of the shapes dhcpd sends, and the edge cases of the
// wire form: option 82 (last), an empty option, one longer than 255 bytes (split),
// a boot file name and a server name past their fields' lengths.
func encodeSeeds(t testing.TB) []*dhcpv4.DHCPv4 {
	hw := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	d, err := dhcpv4.NewDiscovery(hw)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := dhcpv4.NewReplyFromRequest(d,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
		dhcpv4.WithYourIP(net.IPv4(198, 18, 0, 100)),
		dhcpv4.WithServerIP(net.IPv4(198, 18, 0, 1)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(3600e9)),
		dhcpv4.WithOption(dhcpv4.OptBootFileName("undionly.kpxe")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 4, 'p', 'o', 'r', 't'})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{176, 1, 1})),
	)
	if err != nil {
		t.Fatal(err)
	}
	long, err := dhcpv4.FromBytes(offer.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	long.ServerHostName = strings.Repeat("s", 80)
	long.BootFileName = strings.Repeat("f", 200)
	long.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(43), bytes.Repeat([]byte{7}, 600)))
	long.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(224), nil))
	long.GatewayIPAddr = nil
	return []*dhcpv4.DHCPv4{d, offer, long}
}

func TestEncodeMatchesToBytes(t *testing.T) {
	for i, m := range encodeSeeds(t) {
		want := m.ToBytes()
		if got := encode(nil, m); !bytes.Equal(got, want) {
			t.Fatalf("seed %d: encode differs from ToBytes\n got %x\nwant %x", i, got, want)
		}
		// Appending to a used buffer keeps what was there.
		if got := encode([]byte("xy"), m); string(got[:2]) != "xy" || !bytes.Equal(got[2:], want) {
			t.Fatalf("seed %d: encode into a non-empty buffer", i)
		}
	}
}

// FuzzEncode: for any message the library parses, encode writes the same bytes
// as the library's ToBytes.
func FuzzEncode(f *testing.F) {
	for _, m := range encodeSeeds(f) {
		f.Add(m.ToBytes())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := dhcpv4.FromBytes(raw)
		if err != nil {
			return
		}
		if got, want := encode(nil, m), m.ToBytes(); !bytes.Equal(got, want) {
			t.Fatalf("encode differs from ToBytes for %x\n got %x\nwant %x", raw, got, want)
		}
	})
}

// BenchmarkEncode compares the reply encoder with the library's ToBytes on an
// OFFER as dhcpd sends one.
func BenchmarkEncode(b *testing.B) {
	offer := encodeSeeds(b)[1]
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 576)
		for i := 0; i < b.N; i++ {
			buf = encode(buf[:0], offer)
		}
	})
	b.Run("ToBytes", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = offer.ToBytes()
		}
	})
}
