// Package grubcfg renders bootapi's GRUB configs: what a machine that booted
// GRUB (Debian's signed shim and GRUB under Secure Boot, or GRUB on arm64)
// runs, with the same decision, job dispatch and callbacks as an iPXE script
// (package script). GRUB reads them over TFTP (tftpd asks bootapi for them:
// docs/tftpd.md), so the kernel and initrds are TFTP paths of artifacts, not
// URLs.
//
// Every value is quoted for GRUB's lexer (grub.Quote) or refused, so nothing
// from a user, a machine record or a request can add a command or expand a
// variable. The file names GRUB asks for are package grub's.
package grubcfg

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// Config configures a Renderer.
type Config struct {
	// Script renders what GRUB and iPXE boots share: the kernel command line,
	// a job's callback URL and token.
	Script *script.Renderer
	// Profiles are the profiles the menu offers (those with menu set).
	Profiles *store.Cache[*bootapiv1.Profile]
	// MenuTimeout before the menu boots the local disk.
	MenuTimeout time.Duration
}

// Renderer turns decisions into GRUB configs. Like script.Renderer it has no
// side effects.
type Renderer struct{ cfg Config }

// NewRenderer returns a Renderer.
func NewRenderer(cfg Config) *Renderer { return &Renderer{cfg: cfg} }

// Render renders d for a machine of architecture arch (as the firmware
// reports it, for the config's comment) whose boot session is traceparent
// (empty: none); job is set when d dispatches its pending job. A decision that
// cannot be rendered still gets a config, one that tells the console and falls
// back to the next boot device, with the error that caused it.
func (r *Renderer) Render(d decide.Decision, arch, traceparent string, job *script.Job) (script.Script, error) {
	mac := d.Machine.GetMac()
	switch d.Action {
	case decide.Boot:
		s, err := r.boot(d, arch, traceparent, job)
		if err != nil {
			err = fmt.Errorf("profile %s cannot be booted: %w", d.Profile.GetName(), err)
			return script.Script{Body: Failure(mac, "profile "+d.Profile.GetName()+" cannot be booted"), Detail: err.Error(), Final: true}, err
		}
		return script.Script{Body: s, Detail: d.Detail, Final: d.Final}, nil
	case decide.LocalDisk, decide.Sanboot:
		// GRUB has no sanboot: both leave for the firmware's next boot option,
		// the local disk when the boot order says so.
		s, err := LocalDisk(mac, d.Detail)
		return script.Script{Body: s, Detail: d.Detail, Final: true}, err
	case decide.Shell:
		s, err := Shell(mac)
		return script.Script{Body: s, Detail: d.Detail, Final: true}, err
	case decide.Menu:
		s, n, err := r.menu(d)
		if err != nil {
			err = fmt.Errorf("menu: %w", err)
			return script.Script{Body: Failure(mac, "menu could not be rendered"), Detail: "menu render failed: " + err.Error(), Final: true}, err
		}
		return script.Script{Body: s, Detail: fmt.Sprintf("menu (%d profiles)", n), Final: true}, nil
	case decide.Failure:
		return script.Script{Body: Failure(mac, d.Message), Detail: d.Detail, Final: true}, nil
	}
	return script.Script{Body: Failure(mac, "bootapi cannot render this decision"), Detail: "unknown action " + d.Action.String(), Final: true},
		fmt.Errorf("decision %s: unknown action %d", d.Rule, d.Action)
}

// Boot is everything a kernel boot from GRUB needs.
type Boot struct {
	MAC, Hostname, Profile, JobID, Arch string
	// Kernel and Initrds are TFTP names (grub.ArtifactPath).
	Kernel  string
	Initrds []string
	// Args are the kernel command line, already split and checked
	// (grub.CheckKernelArg).
	Args []string
}

// RenderBoot renders a kernel + initrd boot. On failure it falls back to the
// next boot device after a pause, so a broken profile never loops a machine.
func RenderBoot(bt Boot) (string, error) {
	for _, a := range bt.Args {
		if err := grub.CheckKernelArg(a); err != nil {
			return "", err
		}
	}
	var b grub.Builder
	what := "profile " + bt.Profile
	if bt.JobID != "" {
		what = "job " + bt.JobID + ", " + what
	}
	if bt.Arch != "" {
		what += ", arch " + bt.Arch
	}
	b.Comment("bootchain: " + what + ", machine " + bt.MAC)
	who := bt.Hostname
	if who == "" {
		who = bt.MAC
	}
	b.Line("echo", "bootchain: booting "+bt.Profile+" on "+who)
	b.Open("if linux", append([]string{"(tftp)/" + bt.Kernel}, bt.Args...), "; then")
	if len(bt.Initrds) > 0 {
		var initrds []string
		for _, f := range bt.Initrds {
			initrds = append(initrds, "(tftp)/"+f)
		}
		b.Open("if initrd", initrds, "; then")
		b.Line("boot")
		b.Close("fi")
	} else {
		b.Line("boot")
	}
	b.Close("fi")
	b.Line("echo", "bootchain: boot failed, booting the next device in 5 seconds")
	b.Line("sleep", "5")
	b.Line("exit")
	return b.Config()
}

// boot renders a kernel boot of d.Profile with the command line an iPXE
// script of the same decision has (script.Renderer.KernelArgs).
func (r *Renderer) boot(d decide.Decision, arch, tp string, job *script.Job) (string, error) {
	p := d.Profile
	kernel, err := tftpPath(p.GetKernel())
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	bt := Boot{MAC: d.Machine.GetMac(), Hostname: d.Machine.GetHostname(), Profile: p.GetName(), Arch: arch, Kernel: kernel}
	for i, ref := range p.GetInitrds() {
		f, err := tftpPath(ref)
		if err != nil {
			return "", fmt.Errorf("initrd %d: %w", i, err)
		}
		bt.Initrds = append(bt.Initrds, f)
	}
	if bt.Args, err = r.cfg.Script.KernelArgs(d, tp, job); err != nil {
		return "", err
	}
	if d.Job != nil {
		bt.JobID = d.Job.GetId()
	}
	return RenderBoot(bt)
}

// tftpPath is the TFTP name of a profile's boot file: only artifacts can be,
// since Debian's signed GRUB has no HTTP (docs/firmware.md).
func tftpPath(ref *bootapiv1.ArtifactRef) (string, error) {
	switch src := ref.GetSource().(type) {
	case *bootapiv1.ArtifactRef_Artifact:
		return grub.ArtifactPath(src.Artifact)
	case *bootapiv1.ArtifactRef_Url:
		return "", fmt.Errorf("%s: GRUB fetches over TFTP only; the profile must name an artifact", src.Url)
	}
	return "", errors.New("empty reference")
}

// LocalDisk renders a config that leaves GRUB for the firmware's next boot
// option.
func LocalDisk(mac, why string) (string, error) {
	var b grub.Builder
	b.Comment("bootchain: machine " + mac + ": " + why)
	b.Line("exit")
	return b.Config()
}

// Shell renders a config that leaves GRUB at its command line.
func Shell(mac string) (string, error) {
	var b grub.Builder
	b.Comment("bootchain: machine " + mac + ": GRUB command line")
	b.Line("echo", "bootchain: GRUB command line (the shell action)")
	return b.Config()
}

// Failure renders a config that tells the console what went wrong and falls
// back to the next boot device.
func Failure(mac, msg string) string {
	var b grub.Builder
	b.Comment("bootchain: machine " + mac)
	b.Line("echo", "bootchain: "+msg)
	if b.Err() != nil {
		b = grub.Builder{}
		b.Comment("bootchain: machine " + mac)
		b.Line("echo", "bootchain: cannot boot this machine (see the bootapi log)")
	}
	b.Line("sleep", "5")
	b.Line("exit")
	s, _ := b.Config()
	return s
}

// Wait renders what a machine gets while its job is held or its site is at
// its cap of boots in flight: wait, then read its config again.
func Wait(mac string, wait time.Duration) (string, error) {
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	var b grub.Builder
	b.Comment("bootchain: machine " + mac + ": waiting for a boot slot; asking again in " + strconv.Itoa(secs) + " s")
	b.Line("echo", "bootchain: waiting for a boot slot, asking again in "+strconv.Itoa(secs)+" seconds")
	b.Line("sleep", strconv.Itoa(secs))
	b.PrefixLine("configfile", grub.ConfigName(mac))
	return b.Config()
}

// MenuItem is one profile offered in the menu.
type MenuItem struct{ Profile, Description string }

// Menu renders the menu: local disk (the default on timeout), the menu
// profiles (each reads the machine's config for that choice), the GRUB
// command line, reboot.
func Menu(mac, hostname, site string, items []MenuItem, timeout time.Duration) (string, error) {
	var b grub.Builder
	b.Comment("bootchain: menu for " + mac)
	secs := int(timeout / time.Second)
	if secs <= 0 {
		secs = 10
	}
	title := hostname
	if title == "" {
		title = mac
	}
	if site != "" {
		title += " (site " + site + ")"
	}
	b.Line("set", "timeout="+strconv.Itoa(secs))
	b.Line("set", "default=local")
	b.Line("echo", "bootchain: "+title)
	b.Open("menuentry", []string{"Boot from local disk", "--id", "local"}, "{")
	b.Line("exit")
	b.Close("}")
	items = append([]MenuItem(nil), items...)
	sort.Slice(items, func(i, j int) bool { return items[i].Profile < items[j].Profile })
	for _, it := range items {
		if !grub.ValidProfile(it.Profile) {
			return "", fmt.Errorf("%w: profile name %q", grub.ErrUnsafe, it.Profile)
		}
		label := "Install " + it.Profile
		if it.Description != "" {
			label += ": " + it.Description
		}
		b.Open("menuentry", []string{label, "--id", "p-" + it.Profile}, "{")
		b.PrefixLine("configfile", grub.ChoiceName(mac, it.Profile))
		b.Close("}")
	}
	b.Open("menuentry", []string{"GRUB command line", "--id", "shell"}, "{")
	b.Line("echo", "bootchain: GRUB command line")
	b.Close("}")
	b.Open("menuentry", []string{"Reboot", "--id", "reboot"}, "{")
	b.Line("reboot")
	b.Close("}")
	return b.Config()
}

func (r *Renderer) menu(d decide.Decision) (string, int, error) {
	var items []MenuItem
	if r.cfg.Profiles != nil {
		for _, it := range r.cfg.Profiles.List(func(it store.Item[*bootapiv1.Profile]) bool { return it.Value.GetMenu() }) {
			items = append(items, MenuItem{Profile: it.Value.GetName(), Description: it.Value.GetDescription()})
		}
	}
	s, err := Menu(d.Machine.GetMac(), d.Machine.GetHostname(), d.Site.GetName(), items, r.cfg.MenuTimeout)
	return s, len(items), err
}
