//go:build linux

package e2e

import (
	"fmt"
	"strings"
)

// BootHops is the order the hops of one good network boot appear in its trace,
// with the service that must have handled each. For BIOS with chain-loading,
// the "firmware" DHCP is the ROM iPXE's (the NIC's option ROM is iPXE:
// docs/firmware.md).
// HopWant is one hop a trace must hold: its span name, the service that handled
// it, and what it is (some whats narrow the match: "kernel download", "callback
// running", ...).
type HopWant struct{ Name, Service, What string }

var BootHops = []HopWant{
	{"dhcp.discover", "bootchain-dhcpd", "firmware DHCP DISCOVER"},
	{"dhcp.request", "bootchain-dhcpd", "firmware DHCP REQUEST"},
	{"tftp", "bootchain-tftpd", "TFTP transfer of iPXE"},
	{"ipxe.dhcp", "bootchain-dhcpd", "iPXE's DHCP"},
	{"script", "bootchain-bootapi", "script request"},
	{"artifact", "bootchain-artifactstore", "kernel download"},
	{"artifact", "bootchain-artifactstore", "initrd download"},
	{"callback", "bootchain-bootapi", "callback running"},
	{"callback", "bootchain-bootapi", "callback succeeded"},
}

// MissingHop returns the first hop of BootHops that spans (in start-time order)
// lack, as "what (name from service)", or "" when they hold every one in order.
// kernel and initrd are the artifact names the downloads' URL paths hold.
func MissingHop(spans []Span, kernel, initrd string) string {
	return MissingHopIn(BootHops, spans, kernel, initrd)
}

// MissingHopIn is MissingHop for another order of hops (another firmware path).
func MissingHopIn(order []HopWant, spans []Span, kernel, initrd string) string {
	i := 0
	for _, sp := range spans {
		if i == len(order) {
			break
		}
		want := order[i]
		if sp.Name != want.Name || sp.Service != want.Service {
			continue
		}
		switch want.What {
		case "kernel download":
			if !strings.Contains(sp.Attrs["url.path"], kernel) {
				continue
			}
		case "initrd download":
			if !strings.Contains(sp.Attrs["url.path"], initrd) {
				continue
			}
		case "callback running":
			if sp.Attrs["bootchain.report_state"] != "running" {
				continue
			}
		case "tftp shimx64.efi", "tftp grubx64.efi", "tftp grubaa64.efi", "tftp grub.cfg-", "tftp kernel", "tftp initrd":
			file := strings.TrimPrefix(want.What, "tftp ")
			switch file {
			case "kernel":
				file = kernel
			case "initrd":
				file = initrd
			}
			if sp.Attrs["tftp.file"] == "" || !strings.Contains(sp.Attrs["tftp.file"], file) {
				continue
			}
		case "callback succeeded":
			if sp.Attrs["bootchain.report_state"] != "succeeded" {
				continue
			}
		}
		i++
	}
	if i < len(order) {
		return fmt.Sprintf("%s (%s from %s)", order[i].What, order[i].Name, order[i].Service)
	}
	return ""
}
