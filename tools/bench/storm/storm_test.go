//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
)

// ipUDP is an IPv4 header and UDP header (no payload) with the given protocol,
// fragment field and destination port.
func ipUDP(proto byte, frag uint16, dport uint16) []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	b[9] = proto
	binary.BigEndian.PutUint16(b[6:], frag)
	binary.BigEndian.PutUint16(b[20:], 67)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func TestReplyFilter(t *testing.T) {
	vm, err := bpf.NewVM(replyFilter)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		pkt  []byte
		pass bool
	}{
		"dhcp reply":     {ipUDP(17, 0, 68), true},
		"dhcp request":   {ipUDP(17, 0, 67), false},
		"tcp":            {ipUDP(6, 0, 68), false},
		"later fragment": {ipUDP(17, 0x0010, 68), false},
		"don't fragment": {ipUDP(17, 0x4000, 68), true},
		"tftp data":      {ipUDP(17, 0, 40000), false},
	} {
		n, err := vm.Run(tc.pkt)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if (n > 0) != tc.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", name, n, tc.pass)
		}
	}
}

func TestBuildFrame(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 1, 0, 0, 7}
	msg, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
	if err != nil {
		t.Fatal(err)
	}
	f := buildFrame(msg)
	if got := net.HardwareAddr(f[6:12]); got.String() != mac.String() {
		t.Errorf("source MAC %s, want %s", got, mac)
	}
	if ipChecksum(f[14:34]) != 0 {
		t.Error("IP header checksum does not verify")
	}
	back, err := dhcpv4.FromBytes(f[42:])
	if err != nil || back.TransactionID != msg.TransactionID {
		t.Errorf("payload: %v, %v", back, err)
	}
}

// fakeEnv records what a script did.
type fakeEnv struct {
	fetched []string
	fail    map[string]error
	scripts map[string]string
	booted  []string
	slept   time.Duration
}

func (e *fakeEnv) setting(name string) (string, bool) {
	switch name {
	case "net0/mac":
		return "52:54:01:00:00:07", true
	case "platform":
		return "efi", true
	}
	return "", false
}

func (e *fakeEnv) fetch(kind, u string, keep bool) ([]byte, error) {
	e.fetched = append(e.fetched, kind+" "+u)
	if err := e.fail[u]; err != nil {
		return nil, err
	}
	return []byte(e.scripts[u]), nil
}

func (e *fakeEnv) boot(args []string) error { e.booted = args; return nil }
func (e *fakeEnv) sleep(d time.Duration)    { e.slept += d }

func TestRunScript(t *testing.T) {
	job := "#!ipxe\nkernel http://s/k?x=1 initrd=i bootchain.callback=http://s/r?mac=${net0/mac:hexhyp} || goto failed\ninitrd --name i http://s/i || goto failed\nboot || goto failed\n:failed\nsleep 5\nexit 1\n"
	for name, tc := range map[string]struct {
		script  string
		scripts map[string]string
		fail    map[string]error
		wantErr bool
		errHas  string // the error says this
		fetched string
		booted  string
		slept   time.Duration
	}{
		"job": {
			script:  job,
			fetched: "kernel http://s/k?x=1,initrd http://s/i",
			booted:  "initrd=i bootchain.callback=http://s/r?mac=52-54-01-00-00-07",
		},
		"chain": {
			script:  "#!ipxe\nchain --autofree http://s/c?mac=${net0/mac:hexhyp}&p=${platform} || goto retry\nexit\n:retry\nexit\n",
			scripts: map[string]string{"http://s/c?mac=52-54-01-00-00-07&p=efi": job},
			fetched: "script http://s/c?mac=52-54-01-00-00-07&p=efi,kernel http://s/k?x=1,initrd http://s/i",
			booted:  "initrd=i bootchain.callback=http://s/r?mac=52-54-01-00-00-07",
		},
		"initrd fails": {
			script:  job,
			fail:    map[string]error{"http://s/i": errors.New("boom")},
			wantErr: true,
			errHas:  "script exited after: boom",
			fetched: "kernel http://s/k?x=1,initrd http://s/i",
			slept:   5 * time.Second,
		},
		"wait and retry": {
			script:  "#!ipxe\nsleep 3\nchain http://s/again\n",
			scripts: map[string]string{"http://s/again": job},
			fetched: "script http://s/again,kernel http://s/k?x=1,initrd http://s/i",
			booted:  "initrd=i bootchain.callback=http://s/r?mac=52-54-01-00-00-07",
			slept:   3 * time.Second,
		},
		"local disk":   {script: "#!ipxe\necho booting the local disk\nexit\n", wantErr: true, errHas: `script exited (it echoed "booting the local disk")`},
		"not a script": {script: "hello", wantErr: true},
		"unknown":      {script: "#!ipxe\nfrobnicate\n", wantErr: true},
		"loop":         {script: "#!ipxe\n:a\ngoto a\n", wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			env := &fakeEnv{scripts: tc.scripts, fail: tc.fail}
			err := runScript(env, tc.script, 0)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("err %q, want it to say %q", err, tc.errHas)
			}
			if got := strings.Join(env.fetched, ","); got != tc.fetched {
				t.Errorf("fetched %q, want %q", got, tc.fetched)
			}
			if got := strings.Join(env.booted, " "); got != tc.booted {
				t.Errorf("booted %q, want %q", got, tc.booted)
			}
			if env.slept != tc.slept {
				t.Errorf("slept %v, want %v", env.slept, tc.slept)
			}
		})
	}
}

func FuzzRunScript(f *testing.F) {
	f.Add("#!ipxe\nkernel http://s/k a=b\ninitrd http://s/i\nboot\n")
	f.Add("#!ipxe\n:a\nchain http://s/${net0/mac:hexhyp} || goto a\n")
	f.Fuzz(func(t *testing.T, s string) {
		env := &fakeEnv{scripts: map[string]string{}}
		runScript(env, s, 0) // must not panic or hang
	})
}

// TestDownloadWindow: the window runs from the earliest script end to the
// latest initrd end among the boots that succeeded; failed boots count for
// neither the bytes nor the window.
func TestDownloadWindow(t *testing.T) {
	rs := []result{
		{OK: true, Start: 0.5, Hops: map[string]float64{hopScript: 2, hopInitrd: 10}},
		{OK: true, Start: 0, Hops: map[string]float64{hopScript: 3, hopInitrd: 12}},
		{OK: false, Start: 0, Hops: map[string]float64{hopScript: 1, hopInitrd: 30}},
		{OK: true, Start: 1, Hops: map[string]float64{hopScript: 1}},
	}
	n, w := downloadWindow(rs, 100)
	if n != 200 || w != 9500*time.Millisecond {
		t.Errorf("downloadWindow = %d bytes over %v, want 200 over 9.5s", n, w)
	}
	if n, w := downloadWindow(nil, 100); n != 0 || w != 0 {
		t.Errorf("no results: %d, %v", n, w)
	}
}

// TestReportRetries: the storm's installer waits and retries as bootchain's
// installer agent does.
func TestReportRetries(t *testing.T) {
	var waits []time.Duration
	for try := 1; try <= 7; try++ {
		waits = append(waits, reportWait(try))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
	for code, want := range map[int]bool{500: true, 503: true, 408: true, 429: true, 400: false, 403: false, 409: false} {
		if retryable(code) != want {
			t.Errorf("retryable(%d) = %v", code, !want)
		}
	}
}
