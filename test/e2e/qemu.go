//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

// Firmware selects the VM's firmware.
type Firmware string

// Firmware kinds.
const (
	// BIOS is SeaBIOS; the NIC's option ROM is iPXE (Debian package ipxe-qemu).
	BIOS Firmware = "bios"
	// UEFI is OVMF (Debian package ovmf), with a private copy of its variable store.
	UEFI Firmware = "uefi"
	// ARM64 is AAVMF, UEFI for arm64 (Debian package qemu-efi-aarch64), on QEMU's
	// arm64 "virt" machine (qemu-system-aarch64, package qemu-system-arm), with a
	// private copy of its variable store. The NIC never has an option ROM (QEMU's
	// are x86 code): AAVMF's own PXE client boots.
	ARM64 Firmware = "arm64"
)

// AAVMF images (Debian bookworm's qemu-efi-aarch64: 64 MiB flash) and the CPU of
// the arm64 VM. A Cortex-A57 rather than "max": TCG emulates max's pointer
// authentication in software, which slows every function call of the guest.
const (
	DefaultAAVMFCode = "/usr/share/AAVMF/AAVMF_CODE.fd"
	DefaultAAVMFVars = "/usr/share/AAVMF/AAVMF_VARS.fd"
	ARM64CPU         = "cortex-a57"
)

// Default OVMF images (4 MiB flash layout, Debian bookworm's ovmf package).
const (
	DefaultOVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultOVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Secure Boot with the snakeoil key (Debian's ovmf package): the code with Secure
// Boot (needs SMM: q35), a variable store whose PK, KEK and db hold the snakeoil
// certificate, and that certificate's key (encrypted with the passphrase
// "snakeoil"), which stands in for a site's own signing key in tests.
const (
	SecureBootCode     = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	SnakeoilVars       = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
	SnakeoilCert       = "/usr/share/ovmf/PkKek-1-snakeoil.pem"
	SnakeoilKey        = "/usr/share/ovmf/PkKek-1-snakeoil.key"
	SnakeoilPassphrase = "snakeoil"
)

// ErrVMTimeout is returned when a VM had to be killed because it did not finish in
// time.
var ErrVMTimeout = errors.New("e2e: VM timed out")

// VMConfig describes a VM. QEMU always runs with TCG (KVM is not available where the
// tests run), -no-reboot unless Reboot (so a reboot or a panic ends it) and its serial
// port in a file.
type VMConfig struct {
	// Name names the VM's files; default "vm".
	Name string
	// Dir receives the serial log, QEMU's output, the UEFI variable store and the QMP
	// socket; default a new directory under the lab's Dir.
	Dir string
	// Firmware; default BIOS.
	Firmware Firmware
	// NIC is the QEMU NIC model; default "virtio-net-pci".
	NIC string
	// NoNICROM boots without the NIC's option ROM ("romfile="): under UEFI, OVMF's
	// own PXE client then does DHCP and TFTP, like real UEFI servers. (BIOS without a
	// ROM cannot network boot.)
	NoNICROM bool
	// MAC is the NIC's address; required.
	MAC net.HardwareAddr
	// Tap is the tap device (in the namespace QEMU runs in) for the NIC; required.
	Tap string
	// MemoryMiB; default 512.
	MemoryMiB int

	// Kernel, Initrd and Append boot a kernel directly (-kernel) instead of from the
	// network; the NIC is still there.
	Kernel, Initrd, Append string

	// SecureBoot (UEFI only) runs OVMF with Secure Boot enforced: a q35 machine
	// with SMM, SecureBootCode and, unless OVMFVars says otherwise, SnakeoilVars.
	SecureBoot bool
	// HTTPBoot (UEFI only) turns OVMF's PXE over IPv4 and IPv6 off (fw_cfg
	// opt/org.tianocore/IPv4PXESupport, IPv6PXESupport): the NIC's first boot option
	// is then UEFI HTTP boot over IPv4 (DHCP option 60 "HTTPClient", arch 16), and
	// nothing uses TFTP (docs/firmware.md).
	HTTPBoot bool

	// Reboot lets the guest reboot (no -no-reboot): an installer that restarts
	// the machine into what it installed. A panic then reboots too: bound such a
	// VM's run with a context, not with its exit.
	Reboot bool

	// QMP opens a QMP socket, needed for Screendump.
	QMP bool
	// OVMFCode and OVMFVars override the OVMF (or, for ARM64, AAVMF) images.
	OVMFCode, OVMFVars string
	// ExtraArgs are appended to QEMU's arguments.
	ExtraArgs []string
}

// VM is a running (or finished) QEMU.
type VM struct {
	// Proc is the QEMU process.
	Proc *lab.Proc
	// Started is when QEMU was started: power-on.
	Started time.Time
	// SerialPath is the file the guest's serial port writes to.
	SerialPath string
	// OutputPath holds QEMU's own stdout and stderr.
	OutputPath string
	// QMPPath is the QMP socket, if VMConfig.QMP was set.
	QMPPath string
	// Args are QEMU's arguments.
	Args []string
}

// StartVM starts QEMU in ns (the namespace holding cfg.Tap), tracked by l.
func StartVM(l *lab.Lab, ns *lab.Netns, cfg VMConfig) (*VM, error) {
	if cfg.Name == "" {
		cfg.Name = "vm"
	}
	if cfg.Firmware == "" {
		cfg.Firmware = BIOS
	}
	if cfg.NIC == "" {
		cfg.NIC = "virtio-net-pci"
	}
	if cfg.MemoryMiB <= 0 {
		cfg.MemoryMiB = 512
	}
	if len(cfg.MAC) != 6 || cfg.Tap == "" {
		return nil, errors.New("e2e: VMConfig needs MAC and Tap")
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp(l.Dir(), cfg.Name+"-")
		if err != nil {
			return nil, err
		}
		cfg.Dir = d
	} else if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	vm := &VM{
		SerialPath: filepath.Join(cfg.Dir, cfg.Name+".serial"),
		OutputPath: filepath.Join(cfg.Dir, cfg.Name+".qemu.log"),
	}
	// The serial file must exist (empty) for WaitSerial before the guest writes.
	if err := os.WriteFile(vm.SerialPath, nil, 0o644); err != nil {
		return nil, err
	}

	args := []string{
		"-name", cfg.Name,
		"-accel", "tcg",
		"-m", fmt.Sprint(cfg.MemoryMiB),
		"-smp", "1",
		"-nographic",
		"-serial", "file:" + vm.SerialPath,
		"-monitor", "none",
		"-parallel", "none",
	}
	if !cfg.Reboot {
		args = append(args, "-no-reboot")
	}
	switch cfg.Firmware {
	case BIOS:
		if cfg.HTTPBoot || cfg.SecureBoot {
			return nil, errors.New("e2e: HTTPBoot and SecureBoot need UEFI firmware")
		}
	case UEFI:
		code, vars := cfg.OVMFCode, cfg.OVMFVars
		if cfg.SecureBoot {
			if code == "" {
				code = SecureBootCode
			}
			if vars == "" {
				vars = SnakeoilVars
			}
			args = append(args, "-machine", "q35,smm=on",
				"-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		drives, err := pflash(cfg, "OVMF", code, vars, DefaultOVMFCode, DefaultOVMFVars)
		if err != nil {
			return nil, err
		}
		args = append(args, drives...)
		if cfg.HTTPBoot {
			args = append(args,
				"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
				"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no")
		}
	case ARM64:
		if cfg.HTTPBoot || cfg.SecureBoot {
			return nil, errors.New("e2e: HTTPBoot and SecureBoot are not wired for ARM64")
		}
		drives, err := pflash(cfg, "AAVMF", cfg.OVMFCode, cfg.OVMFVars, DefaultAAVMFCode, DefaultAAVMFVars)
		if err != nil {
			return nil, err
		}
		args = append(append(args, "-machine", "virt", "-cpu", ARM64CPU), drives...)
	default:
		return nil, fmt.Errorf("e2e: unknown firmware %q", cfg.Firmware)
	}
	dev := fmt.Sprintf("%s,netdev=net0,mac=%s", cfg.NIC, cfg.MAC)
	if cfg.Kernel == "" {
		dev += ",bootindex=1"
	}
	if cfg.NoNICROM || cfg.Firmware == ARM64 {
		dev += ",romfile="
	}
	args = append(args,
		"-netdev", "tap,id=net0,ifname="+cfg.Tap+",script=no,downscript=no",
		"-device", dev)
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel)
		if cfg.Initrd != "" {
			args = append(args, "-initrd", cfg.Initrd)
		}
		if cfg.Append != "" {
			args = append(args, "-append", cfg.Append)
		}
	}
	if cfg.QMP {
		vm.QMPPath = filepath.Join(cfg.Dir, cfg.Name+".qmp")
		args = append(args, "-qmp", "unix:"+vm.QMPPath+",server=on,wait=off")
	}
	args = append(args, cfg.ExtraArgs...)
	vm.Args = args

	out, err := os.Create(vm.OutputPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := ns.Command(cfg.Firmware.QEMU(), args...)
	cmd.Stdout, cmd.Stderr = out, out
	vm.Started = time.Now()
	if vm.Proc, err = l.Start(cmd); err != nil {
		return nil, err
	}
	return vm, nil
}

// pflash returns the two flash drives of a UEFI firmware: its code (code, else
// defCode) read-only and a private copy, in cfg.Dir, of its variable store (vars,
// else defVars).
func pflash(cfg VMConfig, fw, code, vars, defCode, defVars string) ([]string, error) {
	if code == "" {
		code = defCode
	}
	if vars == "" {
		vars = defVars
	}
	varsCopy := filepath.Join(cfg.Dir, cfg.Name+"."+fw+"_VARS.fd")
	if err := CopyFile(vars, varsCopy); err != nil {
		return nil, fmt.Errorf("e2e: %s variable store: %w", fw, err)
	}
	return []string{
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + varsCopy,
	}, nil
}

// QEMU is the QEMU system emulator that runs f.
func (f Firmware) QEMU() string {
	if f == ARM64 {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// CopyFile copies src to dst (created or truncated).
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// Serial returns what the guest wrote to its serial port so far.
func (vm *VM) Serial() string {
	b, _ := os.ReadFile(vm.SerialPath)
	return string(b)
}

// Output returns QEMU's own output (errors about the tap, firmware files...).
func (vm *VM) Output() string {
	b, _ := os.ReadFile(vm.OutputPath)
	return string(b)
}

// Wait waits for QEMU to exit and returns the serial log. If ctx ends first (with no
// deadline on ctx: after 10 minutes) QEMU is killed and the error wraps
// ErrVMTimeout. A non-zero exit of QEMU is returned as an error with its output.
func (vm *VM) Wait(ctx context.Context) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
	}
	err := vm.Proc.Wait(ctx)
	if ctx.Err() != nil && !vm.Proc.Exited() {
		kerr := vm.Kill()
		return vm.Serial(), errors.Join(fmt.Errorf("%w after %v: %w", ErrVMTimeout, time.Since(vm.Started).Round(time.Millisecond), ctx.Err()), kerr)
	}
	if err != nil {
		return vm.Serial(), fmt.Errorf("e2e: qemu: %w: %s", err, strings.TrimSpace(vm.Output()))
	}
	return vm.Serial(), nil
}

// Kill stops QEMU (SIGTERM, then SIGKILL).
func (vm *VM) Kill() error { return vm.Proc.Stop(2 * time.Second) }

// WaitSerial polls the serial log until it contains marker and returns the time it
// was seen. It fails early if QEMU exits without printing the marker; with no
// deadline on ctx it gives up after 10 minutes.
func (vm *VM) WaitSerial(ctx context.Context, marker string) (time.Time, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	want := []byte(marker)
	for {
		exited := vm.Proc.Exited() // before reading, so a final write is not missed
		b, err := os.ReadFile(vm.SerialPath)
		if err != nil {
			return time.Time{}, fmt.Errorf("e2e: serial log: %w", err)
		}
		if bytes.Contains(b, want) {
			return time.Now(), nil
		}
		if exited {
			return time.Time{}, fmt.Errorf("e2e: QEMU exited (%v) without %q on the serial port; last output:\n%s", vm.Proc.Err(), marker, tail(string(b), 2000))
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("e2e: waiting for %q on the serial port: %w; last output:\n%s", marker, ctx.Err(), tail(string(b), 2000))
		case <-tick.C:
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Screendump saves the VM's screen (firmware and iPXE messages that do not go to the
// serial port) to path, as PNG if path ends in .png, else PPM. It needs VMConfig.QMP.
func (vm *VM) Screendump(ctx context.Context, path string) error {
	if vm.QMPPath == "" {
		return errors.New("e2e: Screendump needs VMConfig.QMP")
	}
	args := map[string]any{"filename": path}
	if strings.HasSuffix(path, ".png") {
		args["format"] = "png"
	}
	_, err := vm.qmp(ctx, "screendump", args)
	return err
}

// qmp runs one QMP command on a fresh connection.
func (vm *VM) qmp(ctx context.Context, command string, args map[string]any) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", vm.QMPPath)
	if err != nil {
		return nil, fmt.Errorf("e2e: qmp: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	r := bufio.NewReader(c)
	type reply struct {
		QMP    json.RawMessage `json:"QMP"`
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
		Event string `json:"event"`
	}
	read := func() (reply, error) {
		for i := 0; i < 100; i++ { // skip asynchronous events
			line, err := r.ReadBytes('\n')
			if err != nil {
				return reply{}, fmt.Errorf("e2e: qmp read: %w", err)
			}
			var rep reply
			if err := json.Unmarshal(line, &rep); err != nil {
				return reply{}, fmt.Errorf("e2e: qmp: %w: %s", err, line)
			}
			if rep.Event == "" {
				return rep, nil
			}
		}
		return reply{}, errors.New("e2e: qmp: too many events")
	}
	send := func(cmd string, a map[string]any) (json.RawMessage, error) {
		msg := map[string]any{"execute": cmd}
		if a != nil {
			msg["arguments"] = a
		}
		if err := json.NewEncoder(c).Encode(msg); err != nil {
			return nil, fmt.Errorf("e2e: qmp write: %w", err)
		}
		rep, err := read()
		if err != nil {
			return nil, err
		}
		if rep.Error != nil {
			return nil, fmt.Errorf("e2e: qmp %s: %s: %s", cmd, rep.Error.Class, rep.Error.Desc)
		}
		return rep.Return, nil
	}
	if _, err := read(); err != nil { // greeting
		return nil, err
	}
	if _, err := send("qmp_capabilities", nil); err != nil {
		return nil, err
	}
	return send(command, args)
}
