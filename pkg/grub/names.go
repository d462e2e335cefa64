package grub

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bootchain/bootchain/pkg/artifactref"
	"github.com/bootchain/bootchain/pkg/macaddr"
)

// Dir is the TFTP folder of GRUB's configs: GRUB's prefix is the folder
// grubx64.efi was loaded from plus "grub", and it reads $prefix/grub.cfg.
const Dir = "grub"

// ArtifactDir is the TFTP folder tftpd serves artifacts from by name.
const ArtifactDir = "artifacts"

// ConfigName is the TFTP name of mac's config, as Bootstrap asks for it with
// GRUB's ${net_default_mac} (lower-case, colons).
func ConfigName(mac string) string { return Dir + "/grub.cfg-" + mac }

// ChoiceName is the TFTP name of mac's config when its menu chose profile.
func ChoiceName(mac, profile string) string { return Dir + "/profile/" + profile + "/grub.cfg-" + mac }

// Request is what a TFTP name of a GRUB config asks for.
type Request struct {
	// MAC is the machine's, normalized (pkg/macaddr).
	MAC string
	// Profile is the menu's choice ("": none).
	Profile string
}

// ErrNotConfig: the name is not one of a GRUB config's.
var ErrNotConfig = errors.New("not a GRUB config name")

// ParseName reads a TFTP name made by ConfigName or ChoiceName.
func ParseName(name string) (Request, error) {
	rest, ok := strings.CutPrefix(name, Dir+"/")
	if !ok {
		return Request{}, ErrNotConfig
	}
	var profile string
	if p, ok := strings.CutPrefix(rest, "profile/"); ok {
		profile, rest, ok = strings.Cut(p, "/")
		if !ok || !ValidProfile(profile) {
			return Request{}, fmt.Errorf("%w: profile in %q", ErrNotConfig, name)
		}
	}
	raw, ok := strings.CutPrefix(rest, "grub.cfg-")
	if !ok {
		return Request{}, ErrNotConfig
	}
	mac, err := macaddr.Normalize(raw)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrNotConfig, err)
	}
	return Request{MAC: mac, Profile: profile}, nil
}

// ValidProfile reports whether p has only the characters a profile name may have in a TFTP path
// (bootapi's own names are narrower still).
func ValidProfile(p string) bool {
	if p == "" || len(p) > 128 || p == "." || p == ".." {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// ArtifactPath is the TFTP name of an artifact reference ("name" or
// "name@sha256:<hex>"): tftpd serves it from its cache and refuses content
// other than a pinned digest names.
func ArtifactPath(ref string) (string, error) {
	r, err := artifactref.Parse(ref)
	if err != nil {
		return "", err
	}
	return ArtifactDir + "/" + r.String(), nil
}

// Bootstrap is grub/grub.cfg, the same for every machine: it reads the
// machine's own config by its MAC and, if that cannot be read, leaves GRUB
// for the firmware's next boot option. GRUB's prefix is (tftp,<server>)/grub
// when grubx64.efi came from the TFTP root (dhcpd's boot file name).
func Bootstrap() string {
	return `# bootchain: ask bootapi (through tftpd) what this machine boots
set timeout=0
source "${prefix}/grub.cfg-${net_default_mac}"
echo 'bootchain: no config for this machine, booting the next device in 5 seconds'
sleep 5
exit
`
}
