package server

import (
	"reflect"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzDecode holds decode to dhcpv4.FromBytes: for any input both fail, or both
// return the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range encodeSeeds(f) {
		f.Add(m.ToBytes())
	}
	f.Add(make([]byte, 240))
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := dhcpv4.FromBytes(b)
		got, gerr := decode(b)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("FromBytes error %v, decode error %v", werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("decode differs:\n got %v\nwant %v", got.Summary(), want.Summary())
		}
	})
}

func TestDecodeMatchesFromBytes(t *testing.T) {
	seeds := encodeSeeds(t)
	raw := seeds[2].ToBytes()
	cases := map[string][]byte{
		"short":           raw[:239],
		"bad cookie":      append(append(append([]byte{}, raw[:236]...), 1, 2, 3, 4), raw[240:]...),
		"no end":          raw[:len(raw)-1],
		"code, no length": append(append([]byte{}, raw[:240]...), 12),
		"long option":     append(append([]byte{}, raw[:240]...), 12, 9, 'x'),
		"repeated": append(append([]byte{}, raw[:240]...),
			53, 1, 1, 12, 0, 12, 2, 'a', 'b', 12, 1, 'c', 0, 0, 255, 7, 7),
	}
	for i, m := range seeds {
		cases[string(rune('0'+i))] = m.ToBytes()
	}
	for name, b := range cases {
		want, werr := dhcpv4.FromBytes(b)
		got, gerr := decode(b)
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%s: FromBytes error %v, decode error %v", name, werr, gerr)
			continue
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decode differs:\n got %v\nwant %v", name, got.Summary(), want.Summary())
		}
	}
	// The concatenated option must not share storage with the packet.
	b := cases["repeated"]
	m, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xee
	}
	if got := string(m.Options[12]); got != "abc" {
		t.Errorf("hostname %q after the buffer was reused", got)
	}
}

func BenchmarkDecode(b *testing.B) {
	raw := encodeSeeds(b)[0].ToBytes()
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decode(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("FromBytes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := dhcpv4.FromBytes(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
