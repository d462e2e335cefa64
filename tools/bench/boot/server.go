//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
)

// Files is what a boot stack under test serves, prepared by the harness for one boot.
type Files struct {
	// Dir is a private directory for the stack's configs, logs and state.
	Dir string
	// TFTPRoot holds the iPXE binaries for firmware PXE clients (BIOSBootFile,
	// UEFIBootFile).
	TFTPRoot string
	// BIOSBootFile and UEFIBootFile name files in TFTPRoot (for UEFI HTTP boot,
	// UEFIBootFile is in HTTPRoot): undionly.kpxe, snponly.efi.
	BIOSBootFile, UEFIBootFile string
	// ARM64BootFile names GRUB in TFTPRoot for arm64 firmware (option 93 = 11),
	// and ARM64GRUB is its original.
	ARM64BootFile, ARM64GRUB string
	// HTTPRoot holds ScriptName, KernelName and InitrdName.
	HTTPRoot string
	// ScriptName, KernelName and InitrdName are the iPXE script, kernel and initrd
	// in HTTPRoot.
	ScriptName, KernelName, InitrdName string
	// ScriptURL is the URL of the iPXE script, to hand to iPXE clients by DHCP.
	ScriptURL string
	// Kernel and Initrd are the originals of the files in HTTPRoot.
	Kernel, Initrd string
	// Cmdline is the kernel command line, with the callback, token and traceparent.
	Cmdline string
	// CallbackURL, Token and Traceparent are the values in Cmdline.
	CallbackURL, Token, Traceparent string

	// Interface is the lab's bridge and ServerAddr its address: serve there.
	Interface  string
	ServerAddr netip.Addr
	// RangeStart and RangeEnd bound the DHCP pool.
	RangeStart, RangeEnd netip.Addr
	// MAC is the machine's MAC and Firmware its firmware.
	MAC      net.HardwareAddr
	Firmware e2e.Firmware
	// IPXEDir holds the iPXE binaries bootchain's row imports: Debian's, or the
	// site-signed UEFI one on a Secure Boot path.
	IPXEDir string
}

// Server is one boot stack under test: DHCP (+TFTP) and HTTP serving Files in the
// lab's main namespace. Start returns once the stack is ready to answer; Stop ends it.
//
// To add a row, implement Server (or wrap a function with FuncServer) and add a Setup
// to setups in main.go. A stack that receives the machine's callbacks itself (as
// bootchain's bootapi does, with its own callback URL in the scripts it renders)
// also implements Reporter; the harness's callback receiver still listens on
// Files.CallbackURL.
type Server interface {
	Start(ctx context.Context, l *lab.Lab, f Files) error
	Stop()
}

// Reporter is implemented by a Server that receives the machine's callbacks itself.
type Reporter interface {
	// WaitSucceeded returns when the machine reported "succeeded".
	WaitSucceeded(ctx context.Context) (time.Time, error)
}

// FuncServer makes a Server of a function that starts a stack and returns the
// function that stops it; for example, later, the bootchain all-in-one launcher.
func FuncServer(start func(ctx context.Context, l *lab.Lab, f Files) (stop func(), err error)) Server {
	return &funcServer{start: start}
}

type funcServer struct {
	start func(ctx context.Context, l *lab.Lab, f Files) (func(), error)
	stop  func()
}

func (s *funcServer) Start(ctx context.Context, l *lab.Lab, f Files) error {
	stop, err := s.start(ctx, l, f)
	s.stop = stop
	return err
}

func (s *funcServer) Stop() {
	if s.stop != nil {
		s.stop()
	}
}

// dnsmasqNginx is dnsmasq (DHCP + TFTP) and nginx (script, kernel, initrd): stock
// settings, or hand-tuned for network boot (docs/firmware.md: no ping before offers,
// option 175.176 = 1 to iPXE, router advertisements with lifetime 0).
type dnsmasqNginx struct {
	tuned   bool
	dnsmasq *e2e.Dnsmasq
	nginx   *e2e.Nginx
}

func (s *dnsmasqNginx) Start(ctx context.Context, l *lab.Lab, f Files) error {
	cfg := e2e.DnsmasqConfig{
		Dir:           filepath.Join(f.Dir, "dnsmasq"),
		Interface:     f.Interface,
		RangeStart:    f.RangeStart,
		RangeEnd:      f.RangeEnd,
		TFTPRoot:      f.TFTPRoot,
		BIOSBootFile:  f.BIOSBootFile,
		UEFIBootFile:  f.UEFIBootFile,
		ARM64BootFile: f.ARM64BootFile,
		IPXEScript:    f.ScriptURL,
	}
	if pathOf(f.Firmware).uefiFileHTTP {
		cfg.HTTPBootURL = fmt.Sprintf("http://%s/%s", f.ServerAddr, f.UEFIBootFile)
	}
	if s.tuned {
		cfg.NoPing = true
		cfg.IPXENoProxyDHCP = true
		cfg.RouterAdvertise = true
	}
	var err error
	if s.dnsmasq, err = e2e.StartDnsmasq(ctx, l, l.Main(), cfg); err != nil {
		return err
	}
	s.nginx, err = e2e.StartNginx(ctx, l, l.Main(), e2e.NginxConfig{
		Dir:    filepath.Join(f.Dir, "nginx"),
		Root:   f.HTTPRoot,
		Listen: netip.AddrPortFrom(f.ServerAddr, 80),
	})
	return err
}

func (s *dnsmasqNginx) Stop() {
	if s.nginx != nil {
		s.nginx.Proc.Stop(3 * time.Second)
	}
	if s.dnsmasq != nil {
		s.dnsmasq.Proc.Stop(3 * time.Second)
	}
}

// stats are what the dnsmasq log shows of one boot, to check a setup did what it
// claims (RAs sent, option 175 forced).
func (s *dnsmasqNginx) stats() (map[string]int, error) {
	if s.dnsmasq == nil {
		return nil, errors.New("dnsmasq not started")
	}
	log := s.dnsmasq.Log()
	count := func(sub string) int { return strings.Count(log, sub) }
	return map[string]int{
		"DHCPOFFER":    count("DHCPOFFER("),
		"DHCPACK":      count("DHCPACK("),
		"RTR-SOLICIT":  count("RTR-SOLICIT("),
		"RTR-ADVERT":   count("RTR-ADVERT("),
		"opt175-sent":  count("option:175"),
		"tftp-sent":    count("]: sent /"),
		"tftp-aborted": count("User aborted"),
	}, nil
}

// describe is a one-line summary of a setup's dnsmasq log, for the verbose output.
func (s *dnsmasqNginx) describe() string {
	st, err := s.stats()
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("dnsmasq: %d offers, %d acks, %d RS, %d RA, option 175 in %d replies, %d TFTP transfers (+%d aborted)",
		st["DHCPOFFER"], st["DHCPACK"], st["RTR-SOLICIT"], st["RTR-ADVERT"], st["opt175-sent"], st["tftp-sent"], st["tftp-aborted"])
}
