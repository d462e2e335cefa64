//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/bootchain/bootchain/tools/bench/internal/benchenv"
)

// bootchainStack is `bootchain up` (the launcher built from this tree) given only
// the boot network's interface, subnet and pool; the machines registered, each
// with a reinstall job of a profile with the kernel and initrd, as an operator
// would before a storm.
type bootchainStack struct {
	st *e2e.Stack
}

func (b *bootchainStack) start(ctx context.Context, l *lab.Lab, f *files, o options) error {
	tl, err := benchenv.Tools(ctx)
	if err != nil {
		return err
	}
	args := append([]string{
		"--dhcpd-interface", l.Bridge(),
		"--dhcpd-subnet", bridgeAddr.Masked().String(),
		"--dhcpd-pool", poolStart.String() + "-" + poolEnd.String(),
	}, o.bcArgs...)
	b.st, err = e2e.StartStack(ctx, l, l.Main(), e2e.StackConfig{Tools: tl, Dir: filepath.Join(l.Dir(), "bootchain"), Args: args, DHCP: true})
	if err != nil {
		return err
	}
	rd := &e2e.Initrd{Path: f.initrd, Kernel: e2e.Kernel{Image: f.kernel}}
	first := newMachine(0, false, nil).mac.String()
	if _, err := b.st.Provision(ctx, e2e.BootConfig{MAC: first, Initrd: rd, IPXEDir: ipxeDir, Profile: "storm",
		Cmdline: "console=ttyS0 hostname={{.Machine.Hostname}}", Hostname: "m0"}); err != nil {
		return err
	}
	cc, err := b.st.Conn("bootapi")
	if err != nil {
		return err
	}
	machines := bootapiv1.NewMachineServiceClient(cc)
	jobs := bootapiv1.NewJobServiceClient(cc)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := 1; i < o.n; i++ {
		mac := newMachine(i, false, nil).mac.String()
		g.Go(func() error {
			if _, err := machines.RegisterMachine(gctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{
				Mac: mac, Hostname: fmt.Sprintf("m%d", i), DefaultAction: bootapiv1.Action_ACTION_LOCAL_DISK,
			}}); err != nil {
				return fmt.Errorf("register %s: %w", mac, err)
			}
			if _, err := jobs.CreateJob(gctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "storm"}); err != nil {
				return fmt.Errorf("job for %s: %w", mac, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// droppedRE finds what a service's session recorder dropped, in its stop line.
var droppedRE = regexp.MustCompile(`msg="([a-z]+) stopped".*sessions_dropped=([0-9]+)`)

// notes says what each service's session recorder dropped (a dropped session
// change or hop would flatter bootchain): bootapi logs it when it stops.
func (b *bootchainStack) notes() string {
	if b.st == nil {
		return ""
	}
	var parts []string
	for _, m := range droppedRE.FindAllStringSubmatch(b.st.Log(), -1) {
		parts = append(parts, m[1]+" "+m[2])
	}
	if len(parts) == 0 {
		return "session changes dropped: not in the launcher's log"
	}
	return "session changes dropped by the recorders: " + strings.Join(parts, ", ")
}

func (b *bootchainStack) caFile() string {
	return pki.Dir(filepath.Join(b.st.DataDir, "pki")).Path(pki.CACert)
}

func (b *bootchainStack) pids() []int {
	if b.st == nil {
		return nil
	}
	return []int{b.st.Proc.PID()}
}

func (b *bootchainStack) stop() {
	if b.st != nil {
		b.st.Stop()
	}
}

// peerStack is dnsmasq (DHCP and TFTP, authoritative for the lab's subnet) tuned
// for network boot and for a fleet (no ping before offers, option 175.176 to iPXE,
// leases and TFTP transfers for every machine at once), and nginx (a worker per
// core, sendfile) serving the same kernel and initrd and a static script with the
// same commands bootchain's has. The machines' callbacks go to a receiver in this
// process, which answers 200; its CPU is not counted, in the peer's favour.
type peerStack struct {
	dnsmasq *e2e.Dnsmasq
	nginx   *e2e.Nginx
	cb      *http.Server
}

func (p *peerStack) start(ctx context.Context, l *lab.Lab, f *files, o options) error {
	server := bridgeAddr.Addr()
	tftpRoot := filepath.Join(l.Dir(), "tftp")
	httpRoot := filepath.Join(l.Dir(), "http")
	for _, d := range []string{tftpRoot, httpRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, c := range [][2]string{
		{filepath.Join(ipxeDir, f.biosFile), filepath.Join(tftpRoot, f.biosFile)},
		{filepath.Join(ipxeDir, f.uefiFile), filepath.Join(tftpRoot, f.uefiFile)},
		{f.kernel, filepath.Join(httpRoot, "vmlinuz")},
		{f.initrd, filepath.Join(httpRoot, "initrd.img")},
	} {
		if err := os.Link(c[0], c[1]); err != nil {
			if err := e2e.CopyFile(c[0], c[1]); err != nil {
				return err
			}
		}
	}
	script := fmt.Sprintf(`#!ipxe
echo storm: ${net0/mac} ${platform} ${buildarch}
kernel http://%[1]s/vmlinuz initrd=initrd.img console=ttyS0 bootchain.callback=http://%[1]s:%[2]d/report?mac=${net0/mac:hexhyp} || goto failed
initrd http://%[1]s/initrd.img || goto failed
boot || goto failed
:failed
echo boot failed, booting the next device in 5 seconds
sleep 5
exit 1
`, server, peerCallbackPort)
	if err := os.WriteFile(filepath.Join(httpRoot, "boot.ipxe"), []byte(script), 0o644); err != nil {
		return err
	}
	limit := 2*o.n + 100
	var err error
	p.dnsmasq, err = e2e.StartDnsmasq(ctx, l, l.Main(), e2e.DnsmasqConfig{
		Dir:             filepath.Join(l.Dir(), "dnsmasq"),
		Interface:       l.Bridge(),
		RangeStart:      poolStart,
		RangeEnd:        poolEnd,
		Netmask:         netip.MustParseAddr("255.255.248.0"),
		TFTPRoot:        tftpRoot,
		BIOSBootFile:    f.biosFile,
		UEFIBootFile:    f.uefiFile,
		IPXEScript:      fmt.Sprintf("http://%s/boot.ipxe", server),
		NoPing:          true,
		IPXENoProxyDHCP: true,
		Extra: []string{
			fmt.Sprintf("dhcp-lease-max=%d", limit),
			fmt.Sprintf("tftp-max=%d", limit),
			"dhcp-authoritative",
		},
	})
	if err != nil {
		return err
	}
	p.nginx, err = e2e.StartNginx(ctx, l, l.Main(), e2e.NginxConfig{
		Dir:         filepath.Join(l.Dir(), "nginx"),
		Root:        httpRoot,
		Listen:      netip.AddrPortFrom(server, 80),
		Workers:     2,
		Connections: limit,
	})
	if err != nil {
		return err
	}
	ln, err := l.Main().Listen("tcp", net.JoinHostPort(server.String(), fmt.Sprint(peerCallbackPort)))
	if err != nil {
		return err
	}
	p.cb = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("state") == "" {
			http.Error(w, "bad report", http.StatusBadRequest)
			return
		}
		w.Write([]byte("ok\n"))
	}), ReadHeaderTimeout: 10 * time.Second}
	go p.cb.Serve(ln)
	return nil
}

// peerCallbackPort is where the peer's machines report.
const peerCallbackPort = 8099

func (p *peerStack) caFile() string { return "" }

func (p *peerStack) pids() []int {
	var ps []int
	if p.dnsmasq != nil {
		ps = append(ps, p.dnsmasq.Proc.PID())
	}
	if p.nginx != nil {
		ps = append(ps, p.nginx.Proc.PID())
	}
	return ps
}

func (p *peerStack) stop() {
	if p.cb != nil {
		p.cb.Close()
	}
	if p.nginx != nil {
		p.nginx.Proc.Stop(3 * time.Second)
	}
	if p.dnsmasq != nil {
		p.dnsmasq.Proc.Stop(3 * time.Second)
	}
}
