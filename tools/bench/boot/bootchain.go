//go:build linux

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/bootchain/bootchain/tools/bench/internal/benchenv"
)

// bootchainDefaults is the "bootchain defaults" row: `bootchain up` (the all-in-one
// launcher, built from this tree) in the lab namespace with only what a user must
// say (the interface, subnet and pool), the same iPXE binaries, kernel and initrd
// uploaded as artifacts, the VM registered and a reinstall job created. bootapi
// renders the script and receives the callbacks itself, so the row's time is the
// job's "succeeded" report.
type bootchainDefaults struct {
	st  *e2e.Stack
	job string
	mac string
}

func (b *bootchainDefaults) Start(ctx context.Context, l *lab.Lab, f Files) error {
	tl, err := benchenv.Tools(ctx)
	if err != nil {
		return err
	}
	args := []string{
		"--dhcpd-interface", f.Interface,
		"--dhcpd-subnet", l.BridgeAddr().Masked().String(),
		"--dhcpd-pool", f.RangeStart.String() + "-" + f.RangeEnd.String(),
	}
	if f.Firmware == uefiPXE6 {
		// The boot network's IPv6 prefix: a ULA, never routed.
		if _, err := l.Main().IP(ctx, "addr", "add", "fd00:bc::1/64", "dev", f.Interface, "nodad"); err != nil {
			return err
		}
		args = append(args, "--dhcpd-dhcpv6-pool", "fd00:bc::100-fd00:bc::1ff", "--dhcpd-advertise6", "fd00:bc::1", "--bootapi-advertise6", "fd00:bc::1")
	}
	b.st, err = e2e.StartStack(ctx, l, l.Main(), e2e.StackConfig{Tools: tl, Dir: filepath.Join(f.Dir, "bootchain"), Args: args, DHCP: true})
	if err != nil {
		return err
	}
	b.mac = f.MAC.String()
	rd := &e2e.Initrd{Path: f.Initrd, Kernel: e2e.Kernel{Image: f.Kernel}}
	if f.Firmware == e2e.ARM64 {
		// arm64: dhcpd's default boot file for arch 11 is grubaa64.efi, which
		// reads its config from bootapi through tftpd; the job is created last.
		if _, err = b.st.Provision(ctx, e2e.BootConfig{MAC: b.mac, Initrd: rd, IPXEDir: ipxeDir, NoJob: true,
			Cmdline: "console=ttyAMA0 panic=1 hostname={{.Machine.Hostname}}"}); err != nil {
			return err
		}
		if out, err := b.st.Bootctl(ctx, "artifacts", "upload", f.ARM64GRUB, "--name", f.ARM64BootFile); err != nil {
			return fmt.Errorf("bootctl artifacts upload: %w: %s", err, out)
		}
		b.job, err = b.st.CreateJob(ctx, b.mac, "e2e")
		return err
	}
	if !pathOf(f.Firmware).shimGrub {
		b.job, err = b.st.Provision(ctx, e2e.BootConfig{MAC: f.MAC.String(), Initrd: rd, IPXEDir: f.IPXEDir})
		return err
	}
	// Secure Boot, Microsoft's keys: the machine boots Debian's signed shim,
	// which loads grubx64.efi; the job is created last, as an operator would.
	if _, err = b.st.Provision(ctx, e2e.BootConfig{MAC: f.MAC.String(), Initrd: rd, IPXEDir: f.IPXEDir, NoJob: true}); err != nil {
		return err
	}
	for _, st := range [][]string{
		{"artifacts", "upload", e2e.ShimSigned, "--name", "shimx64.efi"},
		{"artifacts", "upload", e2e.GrubNetSigned, "--name", "grubx64.efi"},
		{"machines", "update", b.mac, "--boot-file", "shimx64.efi"},
	} {
		if out, err := b.st.Bootctl(ctx, st...); err != nil {
			return fmt.Errorf("bootctl %v: %w: %s", st, err, out)
		}
	}
	b.job, err = b.st.CreateJob(ctx, b.mac, "e2e")
	return err
}

func (b *bootchainDefaults) Stop() {
	if b.st != nil {
		b.st.Stop()
	}
}

// WaitSucceeded polls the job and returns the time bootapi recorded the
// "succeeded" report.
func (b *bootchainDefaults) WaitSucceeded(ctx context.Context) (time.Time, error) {
	cc, err := b.st.Conn("bootapi")
	if err != nil {
		return time.Time{}, err
	}
	jobs := bootapiv1.NewJobServiceClient(cc)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: b.job})
		if err == nil {
			j := r.GetJob()
			switch j.GetState() {
			case bootapiv1.JobState_JOB_STATE_SUCCEEDED:
				for _, rep := range j.GetReports() {
					if rep.GetState() == bootapiv1.JobState_JOB_STATE_SUCCEEDED {
						return rep.GetTime().AsTime(), nil
					}
				}
				return j.GetFinishTime().AsTime(), nil
			case bootapiv1.JobState_JOB_STATE_FAILED, bootapiv1.JobState_JOB_STATE_EXPIRED, bootapiv1.JobState_JOB_STATE_CANCELED:
				return time.Time{}, fmt.Errorf("job %s ended %v: %s", b.job, j.GetState(), j.GetMessage())
			}
		}
		select {
		case <-ctx.Done():
			out, _ := b.st.Bootctl(context.Background(), "trace", b.mac)
			return time.Time{}, fmt.Errorf("job %s: %w\n%s", b.job, ctx.Err(), out)
		case <-tick.C:
		}
	}
}
