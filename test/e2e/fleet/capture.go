//go:build linux

package fleet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// ACK is a DHCPACK seen on a site's boot network.
type ACK struct {
	Time time.Time
	MAC  string
	IP   string
	// Lease is the lease time the ACK granted.
	Lease time.Duration
}

// Capture records DHCP traffic on a site's boot network with tcpdump (a
// separate observer: it sees what went on the wire whatever dhcpd believes).
type Capture struct {
	path string
	proc *lab.Proc
}

// CaptureDHCP starts tcpdump on the site's bridge for UDP ports 67 and 68, and
// waits until it listens.
func (s *Site) CaptureDHCP(ctx context.Context) (*Capture, error) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		return nil, fmt.Errorf("fleet: %w (Debian package tcpdump)", err)
	}
	c := &Capture{path: filepath.Join(s.f.dir, s.Name+"-dhcp.pcap")}
	logPath := filepath.Join(s.f.dir, "logs", s.Name+"-tcpdump.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	// -U: every packet reaches the file at once; -s 0: whole frames.
	// -Z root: tcpdump keeps its user, so the kernel keeps its parent-death
	// signal (a change of credentials clears it) and it dies with the test.
	cmd := s.NS.Command("tcpdump", "-Z", "root", "-i", s.Bridge, "-n", "-U", "-s", "0", "-w", c.path, "udp port 67 or udp port 68")
	cmd.Stdout, cmd.Stderr = out, out
	if c.proc, err = s.f.Lab.Start(cmd); err != nil {
		return nil, err
	}
	for {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "listening on") {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fleet: tcpdump on %s did not start: %w", s.Name, ctx.Err())
		case <-c.proc.Done():
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("fleet: tcpdump exited: %v: %s", c.proc.Err(), b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ACKs stops the capture and returns every DHCPACK in it.
func (c *Capture) ACKs() ([]ACK, error) {
	if err := c.proc.Stop(5 * time.Second); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(c.path)
	if err != nil {
		return nil, err
	}
	return parseACKs(b)
}

// parseACKs reads a pcap file (Ethernet link type) and returns the DHCPACKs.
func parseACKs(b []byte) ([]ACK, error) {
	if len(b) < 24 {
		return nil, errors.New("fleet: pcap: short header")
	}
	var bo binary.ByteOrder
	nano := false
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	default:
		switch binary.BigEndian.Uint32(b) {
		case 0xa1b2c3d4:
			bo = binary.BigEndian
		case 0xa1b23c4d:
			bo, nano = binary.BigEndian, true
		default:
			return nil, errors.New("fleet: pcap: bad magic")
		}
	}
	if lt := bo.Uint32(b[20:]); lt != 1 {
		return nil, fmt.Errorf("fleet: pcap: link type %d, want Ethernet", lt)
	}
	var acks []ACK
	for off := 24; off+16 <= len(b); {
		sec, frac, incl := bo.Uint32(b[off:]), bo.Uint32(b[off+4:]), int(bo.Uint32(b[off+8:]))
		off += 16
		if off+incl > len(b) {
			break // tcpdump was stopped mid-record
		}
		frame := b[off : off+incl]
		off += incl
		ns := int64(frac) * 1000
		if nano {
			ns = int64(frac)
		}
		ts := time.Unix(int64(sec), ns)
		payload, ok := udpPayload(frame)
		if !ok {
			continue
		}
		m, err := dhcpv4.FromBytes(payload)
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply || m.MessageType() != dhcpv4.MessageTypeAck {
			continue
		}
		acks = append(acks, ACK{Time: ts, MAC: m.ClientHWAddr.String(), IP: m.YourIPAddr.String(), Lease: m.IPAddressLeaseTime(0)})
	}
	return acks, nil
}

// udpPayload returns the UDP payload of an Ethernet/IPv4 frame (VLAN tags not
// expected on a lab bridge).
func udpPayload(f []byte) ([]byte, bool) {
	if len(f) < 14 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return nil, false
	}
	ip := f[14:]
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 17 {
		return nil, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+8 {
		return nil, false
	}
	udp := ip[ihl:]
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < 8 || n > len(udp) {
		return nil, false
	}
	return udp[8:n], true
}
