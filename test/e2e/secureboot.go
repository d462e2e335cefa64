//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Debian's signed shim and GRUB, as scripts/install-deps.sh unpacks them
// (shim-signed, grub-efi-amd64-signed), and the variable store with
// Microsoft's keys.
const (
	SecureBootRoot = "/opt/bootchain/secureboot"
	ShimSigned     = SecureBootRoot + "/usr/lib/shim/shimx64.efi.signed"
	// GrubNetSigned is the network GRUB: its prefix is the folder it was
	// loaded from (grub/ below it), where it reads grub.cfg over TFTP.
	GrubNetSigned = SecureBootRoot + "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
	MicrosoftVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// SiteKey signs EFI binaries as a site that enrolled its own key in its machines'
// firmware would: here the snakeoil key and certificate of Debian's ovmf package,
// which SnakeoilVars enrolls as PK, KEK and db.
type SiteKey struct {
	// Key is the private key, decrypted, and Cert its certificate (PEM).
	Key, Cert string
}

// NewSiteKey decrypts the snakeoil key into dir (mode 0600) for sbsign, which
// cannot take a passphrase on its command line.
func NewSiteKey(ctx context.Context, dir string) (*SiteKey, error) {
	for _, bin := range []string{"sbsign", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w (scripts/install-deps.sh installs sbsigntool and openssl)", err)
		}
	}
	k := &SiteKey{Key: filepath.Join(dir, "site-key.pem"), Cert: SnakeoilCert}
	if out, err := exec.CommandContext(ctx, "openssl", "pkey", "-in", SnakeoilKey,
		"-passin", "pass:"+SnakeoilPassphrase, "-out", k.Key).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("e2e: decrypt the snakeoil key: %w: %s", err, out)
	}
	if err := os.Chmod(k.Key, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// Sign writes in, signed with the site key, to out. An image that is signed
// already (Debian's kernel) keeps its signature and gains this one.
func (k *SiteKey) Sign(ctx context.Context, in, out string) error {
	if b, err := exec.CommandContext(ctx, "sbsign", "--key", k.Key, "--cert", k.Cert, "--output", out, in).CombinedOutput(); err != nil {
		return fmt.Errorf("e2e: sbsign %s: %w: %s", in, err, b)
	}
	return nil
}
