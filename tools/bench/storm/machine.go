//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Hops of a boot, in order; a failed boot is counted under the hop it failed in.
const (
	hopPXEDHCP   = "dhcp-pxe"
	hopTFTP      = "tftp"
	hopIPXEDHCP  = "dhcp-ipxe"
	hopScript    = "script"
	hopKernel    = "kernel"
	hopInitrd    = "initrd"
	hopRunning   = "running"
	hopSucceeded = "succeeded"
)

var hops = []string{hopPXEDHCP, hopTFTP, hopIPXEDHCP, hopScript, hopKernel, hopInitrd, hopRunning, hopSucceeded}

// Firmware timeouts. PXE ROMs retransmit DISCOVER after 4, 8, 16 and 32 s (PXE
// 2.1); iPXE after 1, 2, 4, 8 and 16 s. TFTP in lock-step: a ROM re-sends its last
// packet after 1 s, doubling, a few times. iPXE's HTTP gives up on a silent
// connection after about a minute.
var (
	pxeDHCPTimeouts  = []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}
	ipxeDHCPTimeouts = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
	tftpTimeouts     = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	httpIdle         = 60 * time.Second
	reportFor        = 300 * time.Second
	callbackTimeout  = 10 * time.Second
	// reportFor is how long the installer keeps trying one report, as the
	// installer agent bootchain ships (test/e2e/initramfs/bootchain.sh,
	// REPORT_FOR) does: waits of 1, 2, 4, 8, then 10 s between attempts.
)

// machine is one virtual machine: its identity, what it did and when.
type machine struct {
	mac    net.HardwareAddr
	uefi   bool
	uuid   [16]byte
	link   *dhcpLink
	client *http.Client // bound to the leased address once known

	ip        netip.Addr
	server    netip.Addr // DHCP server identifier
	bootFile  string
	nextSrv   netip.Addr
	cmdline   []string
	bytes     int64 // payload bytes received (TFTP + HTTP)
	hopDone   map[string]time.Duration
	start     time.Time
	failedHop string
	err       error
	curHop    string
	resent    map[string]int // retransmissions (DHCP, TFTP) by hop
}

// result is one machine's outcome, printed as a JSON line by the client process.
type result struct {
	MAC       string             `json:"mac"`
	UEFI      bool               `json:"uefi"`
	OK        bool               `json:"ok"`
	FailedHop string             `json:"failed_hop,omitempty"`
	Err       string             `json:"err,omitempty"`
	Start     float64            `json:"start"` // seconds since the storm began
	Total     float64            `json:"total"` // seconds, power-on to succeeded
	Hops      map[string]float64 `json:"hops"`  // seconds since power-on at each hop's end
	Bytes     int64              `json:"bytes"`
	Resent    map[string]int     `json:"resent,omitempty"`
}

func (m *machine) fail(err error) error {
	if m.err == nil {
		m.failedHop, m.err = m.curHop, err
	}
	return err
}

func (m *machine) done(hop string) {
	m.hopDone[hop] = time.Since(m.start)
}

// run boots the machine once: firmware PXE, TFTP, iPXE's DHCP, the script and what
// it fetches, then the installer's callbacks.
func (m *machine) run(ctx context.Context) error {
	m.start = time.Now()
	m.hopDone = map[string]time.Duration{}
	m.resent = map[string]int{}

	m.curHop = hopPXEDHCP
	if err := m.dhcp(ctx, false); err != nil {
		return m.fail(err)
	}
	m.done(hopPXEDHCP)

	m.curHop = hopTFTP
	if err := m.tftpBoot(ctx); err != nil {
		return m.fail(err)
	}
	m.done(hopTFTP)

	m.curHop = hopIPXEDHCP
	if err := m.dhcp(ctx, true); err != nil {
		return m.fail(err)
	}
	m.done(hopIPXEDHCP)

	m.curHop = hopScript
	m.client = m.httpClient()
	defer m.client.CloseIdleConnections()
	env := &scriptEnv{m: m, ctx: ctx}
	if !strings.HasPrefix(m.bootFile, "http://") {
		return m.fail(fmt.Errorf("iPXE boot file %q is not an http:// script", m.bootFile))
	}
	body, err := env.fetch("script", m.bootFile, true)
	if err != nil {
		return m.fail(err)
	}
	if err := runScript(env, string(body), 0); err != nil {
		return m.fail(err)
	}
	if m.cmdline == nil {
		return m.fail(errors.New("script ended without booting"))
	}

	// The installer: "running", then "succeeded", with the token exchange.
	m.curHop = hopRunning
	cb := kernelArg(m.cmdline, "bootchain.callback")
	if cb == "" {
		return m.fail(errors.New("no bootchain.callback on the kernel command line"))
	}
	token := kernelArg(m.cmdline, "bootchain.token")
	tp := kernelArg(m.cmdline, "bootchain.traceparent")
	if token, err = m.report(ctx, cb, token, tp, "running", 50); err != nil {
		return m.fail(err)
	}
	m.done(hopRunning)
	m.curHop = hopSucceeded
	if _, err := m.report(ctx, cb, token, tp, "succeeded", 100); err != nil {
		return m.fail(err)
	}
	m.done(hopSucceeded)
	return nil
}

func kernelArg(args []string, key string) string {
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// dhcp runs DISCOVER/OFFER/REQUEST/ACK as the firmware's PXE client (ipxe false)
// or as iPXE (option 77 "iPXE", option 175).
func (m *machine) dhcp(ctx context.Context, ipxe bool) error {
	arch := iana.INTEL_X86PC
	if m.uefi {
		arch = iana.EFI_X86_64
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(m.mac),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", uint16(arch)))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, m.uuid[:]...)),
		dhcpv4.WithGeneric(dhcpv4.OptionMaximumDHCPMessageSize, []byte{0x05, 0xc0}),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionVendorSpecificInformation,
			dhcpv4.OptionClassIdentifier, dhcpv4.OptionTFTPServerName, dhcpv4.OptionBootfileName),
	}
	if ipxe {
		// iPXE's feature list in option 175: PXE extensions, HTTP, DNS, TFTP, bzImage,
		// script, EFI (as its build has them), and its user class.
		feat := []byte{0x11, 1, 1, 0x13, 1, 1, 0x15, 1, 1, 0x19, 1, 1, 0x18, 1, 1}
		if m.uefi {
			feat = append(feat, 0x24, 1, 1)
		} else {
			feat = append(feat, 0x14, 1, 1)
		}
		mods = append(mods,
			dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), feat),
			dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	}
	disc, err := dhcpv4.New(append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))...)
	if err != nil {
		return err
	}
	resent := 0
	defer func() { m.resent[m.curHop] += resent }()
	timeouts := pxeDHCPTimeouts
	if ipxe {
		timeouts = ipxeDHCPTimeouts
	}
	offer, err := m.link.exchange(ctx, disc, timeouts, &resent, func(r *dhcpv4.DHCPv4) bool {
		return r.MessageType() == dhcpv4.MessageTypeOffer && !r.YourIPAddr.IsUnspecified() && bootFileOf(r) != ""
	})
	if err != nil {
		return err
	}
	sid := offer.ServerIdentifier()
	req, err := dhcpv4.New(append(mods,
		dhcpv4.WithTransactionID(disc.TransactionID),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)))...)
	if err != nil {
		return err
	}
	var nak error
	ack, err := m.link.exchange(ctx, req, timeouts, &resent, func(r *dhcpv4.DHCPv4) bool {
		switch r.MessageType() {
		case dhcpv4.MessageTypeAck:
			return true
		case dhcpv4.MessageTypeNak:
			nak = fmt.Errorf("NAK: %s", r.Message())
			return true
		}
		return false
	})
	if err != nil {
		return err
	}
	if nak != nil {
		return nak
	}
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() {
		return errors.New("ACK without an address")
	}
	m.ip = ip
	m.server, _ = netip.AddrFromSlice(sid.To4())
	m.bootFile = bootFileOf(ack)
	if m.bootFile == "" {
		m.bootFile = bootFileOf(offer)
	}
	m.nextSrv, _ = netip.AddrFromSlice(ack.ServerIPAddr.To4())
	if !m.nextSrv.IsValid() || m.nextSrv.IsUnspecified() {
		m.nextSrv = m.server
	}
	return nil
}

func bootFileOf(r *dhcpv4.DHCPv4) string {
	if f := r.BootFileNameOption(); f != "" {
		return f
	}
	return strings.TrimRight(r.BootFileName, "\x00")
}

// tftpBoot downloads the boot file from the next server in lock-step, from the
// leased address. UEFI's PXE first asks for the size alone and aborts, then
// downloads; a BIOS ROM downloads at once.
func (m *machine) tftpBoot(ctx context.Context) error {
	blksize := 1432
	if m.uefi {
		blksize = 1468
		if _, err := m.tftp(ctx, m.bootFile, 0); err != nil {
			return fmt.Errorf("size probe: %w", err)
		}
	}
	n, err := m.tftp(ctx, m.bootFile, blksize)
	m.bytes += n
	return err
}

// tftp reads one file; blksize 0 only asks for its size (tsize) and aborts.
func (m *machine) tftp(ctx context.Context, name string, blksize int) (int64, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(m.ip, 0)))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	srv := net.UDPAddrFromAddrPort(netip.AddrPortFrom(m.nextSrv, 69))
	var rrq bytes.Buffer
	rrq.Write([]byte{0, 1})
	rrq.WriteString(name + "\x00octet\x00tsize\x000\x00")
	if blksize > 0 {
		fmt.Fprintf(&rrq, "blksize\x00%d\x00", blksize)
	}
	out := rrq.Bytes()
	to := srv
	var got int64
	block := uint16(0)
	bs := 512
	buf := make([]byte, 65536)
	tries := 0
	for {
		if ctx.Err() != nil {
			return got, ctx.Err()
		}
		if _, err := c.WriteToUDP(out, to); err != nil {
			return got, err
		}
		timeout := tftpTimeouts[min(tries, len(tftpTimeouts)-1)]
		c.SetReadDeadline(time.Now().Add(timeout))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				m.resent[hopTFTP]++
				if tries++; tries >= len(tftpTimeouts) {
					return got, fmt.Errorf("timeout after block %d", block)
				}
				continue
			}
			return got, err
		}
		if n < 4 || !from.IP.Equal(srv.IP) {
			continue
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case 5: // ERROR
			return got, fmt.Errorf("TFTP error %d: %s", binary.BigEndian.Uint16(p[2:]), strings.TrimRight(string(p[4:]), "\x00"))
		case 6: // OACK
			if block != 0 {
				continue
			}
			to = from
			opts := strings.Split(string(p[2:]), "\x00")
			for i := 0; i+1 < len(opts); i += 2 {
				if strings.EqualFold(opts[i], "blksize") {
					fmt.Sscan(opts[i+1], &bs)
				}
			}
			if blksize == 0 {
				// The size probe: abort as the firmware does (error 8, option refused).
				c.WriteToUDP([]byte("\x00\x05\x00\x08size only\x00"), to)
				return 0, nil
			}
			out = []byte{0, 4, 0, 0}
			tries = 0
		case 3: // DATA
			n := binary.BigEndian.Uint16(p[2:])
			if n != block+1 {
				if n == block && block > 0 {
					continue // a duplicate; our ACK is on its way
				}
				continue
			}
			if block == 0 {
				to = from
			}
			block = n
			got += int64(len(p) - 4)
			out = []byte{0, 4, byte(block >> 8), byte(block)}
			tries = 0
			if len(p)-4 < bs {
				c.WriteToUDP(out, to)
				return got, nil
			}
		}
	}
}

// httpClient is an HTTP client that connects from the leased address, keeps its
// connection between requests as iPXE does, and gives up on a silent connection.
func (m *machine) httpClient() *http.Client {
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(m.ip, 0)), Timeout: 15 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConnsPerHost:   1,
		DisableCompression:    true,
		ResponseHeaderTimeout: httpIdle,
		TLSClientConfig:       &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12},
	}}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// scriptEnv runs iPXE commands for a machine.
type scriptEnv struct {
	m   *machine
	ctx context.Context
}

func (e *scriptEnv) setting(name string) (string, bool) {
	m := e.m
	switch name {
	case "net0/mac", "mac":
		return m.mac.String(), true
	case "net0/ip", "ip":
		return m.ip.String(), true
	case "buildarch":
		if m.uefi {
			return "x86_64", true
		}
		return "i386", true
	case "platform":
		if m.uefi {
			return "efi", true
		}
		return "pcbios", true
	case "uuid":
		u := m.uuid
		return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), true
	case "serial":
		return fmt.Sprintf("STORM%x", m.mac[3:]), true
	case "manufacturer":
		return "bootchain", true
	case "product":
		return "storm", true
	}
	return "", false
}

// fetch GETs u from the leased address; the body is kept only for scripts. Its
// hop is the script or the kind of image, for the failure count.
func (e *scriptEnv) fetch(kind, u string, keep bool) ([]byte, error) {
	m := e.m
	switch kind {
	case "kernel":
		m.curHop = hopKernel
	case "initrd":
		m.curHop = hopInitrd
	}
	if _, err := url.Parse(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "iPXE/1.21.1 (bootchain storm)")
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET %s: %s", redact(u), resp.Status)
	}
	// A stalled transfer ends after httpIdle without data, as iPXE's does.
	idle := time.AfterFunc(httpIdle, cancel)
	defer idle.Stop()
	if keep {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		m.bytes += int64(len(b))
		m.done(hopScript)
		return b, err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var n int64
	for {
		k, err := resp.Body.Read(*bp)
		n += int64(k)
		if k > 0 {
			idle.Reset(httpIdle)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			m.bytes += n
			return nil, fmt.Errorf("GET %s after %d bytes: %w", redact(u), n, err)
		}
	}
	m.bytes += n
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return nil, fmt.Errorf("GET %s: %d of %d bytes", redact(u), n, resp.ContentLength)
	}
	if kind == "kernel" {
		m.done(hopKernel)
	} else if kind == "initrd" {
		m.done(hopInitrd)
	}
	return nil, nil
}

// redact drops a URL's query (tokens, traceparents) from error messages.
func redact(u string) string {
	s, _, _ := strings.Cut(u, "?")
	return s
}

func (e *scriptEnv) boot(kernelArgs []string) error {
	e.m.cmdline = kernelArgs
	return nil
}

func (e *scriptEnv) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.ctx.Done():
	}
}

// report POSTs one installer report (the e2e initrd's contract: form body with
// the token; the answer may carry "token <fresh>" for the next report), again
// and again for reportFor while the server does not answer or answers 5xx, 408
// or 429, as bootchain's installer agent does; another 4xx stops at once. It
// returns the token for the next report.
func (m *machine) report(ctx context.Context, cb, token, traceparent, state string, progress int) (string, error) {
	form := url.Values{"state": {state}, "progress": {fmt.Sprint(progress)}, "message": {"storm"}}
	if token != "" {
		form.Set("token", token)
	}
	deadline := time.Now().Add(reportFor)
	var last error
	for try := 0; ; try++ {
		if try > 0 {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return token, fmt.Errorf("%d attempts: %w", try, last)
			}
			(&scriptEnv{ctx: ctx}).sleep(reportWait(try))
		}
		rctx, cancel := context.WithTimeout(ctx, callbackTimeout)
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, cb, strings.NewReader(form.Encode()))
		if err != nil {
			cancel()
			return token, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
		resp, err := m.client.Do(req)
		if err != nil {
			cancel()
			last = err
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		cancel()
		if resp.StatusCode/100 != 2 {
			last = fmt.Errorf("report %s: %s", state, resp.Status)
			if !retryable(resp.StatusCode) {
				return token, last
			}
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if f, ok := strings.CutPrefix(sc.Text(), "token "); ok {
				token = strings.TrimSpace(f)
			}
		}
		return token, nil
	}
}

// reportWait is the wait before a report's attempt try (1, 2, ...): 1, 2, 4, 8,
// then 10 s.
func reportWait(try int) time.Duration {
	if try >= 5 {
		return 10 * time.Second
	}
	return time.Second << (try - 1)
}

// retryable reports whether an installer tries a report again after this
// status: a server error, 408 or 429; another 4xx is a refusal.
func retryable(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// newMachine makes machine i of a storm: its MAC, firmware and UUID.
func newMachine(i int, uefi bool, link *dhcpLink) *machine {
	m := &machine{
		mac:  net.HardwareAddr{0x52, 0x54, 0x01, byte(i >> 16), byte(i >> 8), byte(i)},
		uefi: uefi,
		link: link,
	}
	binary.BigEndian.PutUint64(m.uuid[:8], rand.Uint64())
	binary.BigEndian.PutUint64(m.uuid[8:], uint64(i))
	return m
}
