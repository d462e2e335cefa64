// Package bootfile decides what a PXE or iPXE client is told to boot: an ordered
// chain of rules where the first match wins, ending in "no boot file".
//
//	d := bootfile.Decide(&bootfile.Request{Arch: 7, HasArch: true, PXE: true, Site: site})
//	// d.File == "snponly.efi", d.Rule == "arch"
package bootfile

import (
	"strconv"
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// Client architectures of option 93 (RFC 4578, IANA "Processor Architecture Types").
const (
	ArchBIOS         = 0
	ArchEFIIA32      = 6
	ArchEFIBC        = 7
	ArchEFIx64       = 9
	ArchEFIARM64     = 11
	ArchEFIx86HTTP   = 15
	ArchEFIx64HTTP   = 16
	ArchEFIARM64HTTP = 19
	defaultBIOS      = "undionly.kpxe"
	defaultUEFIx64   = "snponly.efi"
	defaultUEFIARM64 = "grubaa64.efi" // Debian builds no arm64 iPXE: its signed GRUB (docs/firmware.md#arm64)
	defaultHTTPx64   = "snponly.efi"
	defaultHTTPARM64 = "ipxe-arm64.efi"
	scriptPath       = "/boot.ipxe"
	artifactsPath    = "/artifacts/"
	keyBIOS          = "bios"
	keyUEFIx64       = "uefi-x64"
	keyUEFIARM64     = "uefi-arm64"
	keyHTTPx64       = "http-x64"
	keyHTTPARM64     = "http-arm64"
	vendorPXEClient  = "PXEClient"
	vendorHTTPClient = "HTTPClient"
)

// Request is what the client told us plus what we know about it.
type Request struct {
	// Arch is option 93's first value when HasArch.
	Arch    uint16
	HasArch bool
	// VendorClass is option 60.
	VendorClass string
	// IPXE: option 77 is "iPXE" or option 175 is present.
	IPXE bool
	// Chainloaded: this iPXE is the one we chain-loaded in this boot session.
	Chainloaded bool
	// Machine is the machine's record; nil for an unknown client.
	Machine *bootapiv1.Machine
	// Site is the site's record with URLs filled in (never nil).
	Site *bootapiv1.Site
}

// PXE reports whether the client is a network-boot client at all.
func (r *Request) PXE() bool {
	return r.IPXE || strings.HasPrefix(r.VendorClass, vendorPXEClient) || r.HTTPClient()
}

// HTTPClient reports a UEFI HTTP-boot client.
func (r *Request) HTTPClient() bool { return strings.HasPrefix(r.VendorClass, vendorHTTPClient) }

// Decision is the answer for one client.
type Decision struct {
	// Rule that decided.
	Rule string
	// PXE: the reply carries PXE data (next-server, vendor class, boot file if any).
	PXE bool
	// File is the boot file name or URL; empty: none.
	File string
	// HTTP: File is an http URL for a UEFI HTTP-boot client (answer with option 60
	// "HTTPClient").
	HTTP bool
	// Script: File is the iPXE script URL on bootapi.
	Script bool
	// Chainload: File is our iPXE binary given to a client that already runs iPXE.
	Chainload bool
}

// Rule is one link of the chain.
type Rule struct {
	Name  string
	Match func(r *Request) (Decision, bool)
}

// Chain is the order in which rules are tried.
var Chain = []Rule{
	{"not-pxe", func(r *Request) (Decision, bool) { return Decision{}, !r.PXE() }},
	{"netboot-disabled", func(r *Request) (Decision, bool) {
		return Decision{PXE: true}, r.Machine != nil && r.Machine.GetNetbootDisabled()
	}},
	{"unknown-client", func(r *Request) (Decision, bool) {
		return Decision{PXE: true}, r.Machine == nil &&
			r.Site.GetDhcp().GetUnknownClients() == bootapiv1.DhcpUnknownClients_DHCP_UNKNOWN_CLIENTS_IGNORE
	}},
	{"ipxe-chainload", func(r *Request) (Decision, bool) {
		if !r.IPXE || r.Chainloaded || !r.Site.GetDhcp().GetChainloadOwnIpxe() {
			return Decision{}, false
		}
		f := archFile(r)
		return Decision{PXE: true, File: f, Chainload: true}, f != ""
	}},
	{"ipxe-script", func(r *Request) (Decision, bool) {
		return Decision{PXE: true, File: strings.TrimSuffix(r.Site.GetBootapiUrl(), "/") + scriptPath, Script: true}, r.IPXE
	}},
	{"machine-override", func(r *Request) (Decision, bool) {
		f := r.Machine.GetBootFile()
		if f == "" {
			return Decision{}, false
		}
		if r.HTTPClient() && !strings.Contains(f, "://") {
			return Decision{PXE: true, File: artifactURL(r.Site, f), HTTP: true}, true
		}
		return Decision{PXE: true, File: f, HTTP: r.HTTPClient()}, true
	}},
	{"http-boot", func(r *Request) (Decision, bool) {
		if !r.HTTPClient() {
			return Decision{}, false
		}
		name := siteFile(r.Site, keyHTTPx64, defaultHTTPx64)
		if r.HasArch && (r.Arch == ArchEFIARM64HTTP || r.Arch == ArchEFIARM64) {
			name = siteFile(r.Site, keyHTTPARM64, defaultHTTPARM64)
		}
		return Decision{PXE: true, File: artifactURL(r.Site, name), HTTP: true}, true
	}},
	{"arch", func(r *Request) (Decision, bool) {
		f := archFile(r)
		return Decision{PXE: true, File: f}, f != ""
	}},
	{"not-found", func(r *Request) (Decision, bool) { return Decision{PXE: true}, true }},
}

// Decide runs the chain and returns the first match.
func Decide(r *Request) Decision {
	if r.Site == nil {
		r.Site = &bootapiv1.Site{}
	}
	for _, rule := range Chain {
		if d, ok := rule.Match(r); ok {
			d.Rule = rule.Name
			return d
		}
	}
	return Decision{Rule: "none"}
}

func archFile(r *Request) string {
	if !r.HasArch {
		return siteFile(r.Site, keyBIOS, defaultBIOS)
	}
	switch r.Arch {
	case ArchBIOS:
		return siteFile(r.Site, keyBIOS, defaultBIOS)
	case ArchEFIBC, ArchEFIx64:
		return siteFile(r.Site, keyUEFIx64, defaultUEFIx64)
	case ArchEFIARM64:
		return siteFile(r.Site, keyUEFIARM64, defaultUEFIARM64)
	}
	return ""
}

func siteFile(s *bootapiv1.Site, key, def string) string {
	if f := s.GetDhcp().GetBootFiles()[key]; f != "" {
		return f
	}
	return def
}

func artifactURL(s *bootapiv1.Site, name string) string {
	return strings.TrimSuffix(s.GetArtifactUrl(), "/") + artifactsPath + name
}

// Annotate records on a boot-session hop (through set) what the client said
// and what was decided, in the same keys for DHCP and DHCPv6.
func Annotate(set func(key, value string), r *Request, userClass string, d Decision) {
	if r.HasArch {
		set("dhcp.client_arch", strconv.Itoa(int(r.Arch)))
	}
	if r.VendorClass != "" {
		set("dhcp.vendor_class", r.VendorClass)
	}
	if userClass != "" {
		set("dhcp.user_class", userClass)
	}
	set("dhcp.boot_rule", d.Rule)
	if d.File != "" {
		set("dhcp.boot_file", d.File)
	}
}
