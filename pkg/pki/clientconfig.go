package pki

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ClientConfig is the file that tells bootctl (and scripts) where bootchain's gRPC
// APIs are and which credentials to present. `bootchain up` writes one for its
// admin; flags and BOOTCHAIN_* variables override every field.
type ClientConfig struct {
	// Addresses (host:port) of the services' gRPC APIs.
	BootAPI       string `json:"bootapi,omitempty"`
	ArtifactStore string `json:"artifactstore,omitempty"`
	DHCPD         string `json:"dhcpd,omitempty"`
	TFTPD         string `json:"tftpd,omitempty"`
	// CA verifies the servers; Cert and Key are the client certificate (mTLS).
	// Absolute paths.
	CA   string `json:"ca,omitempty"`
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// ServerName overrides the name verified in the servers' certificates.
	ServerName string `json:"server_name,omitempty"`
	// TokenFile holds a bearer token, for a client without a certificate.
	TokenFile string `json:"token_file,omitempty"`
	// DataDir is set by `bootchain up` to the data dir it wrote the file for: it
	// rewrites such a file at start, and never one without this field (a
	// person's own).
	DataDir string `json:"data_dir,omitempty"`
}

// Addr returns the address of service ("bootapi", "artifactstore", "dhcpd",
// "tftpd"), or "".
func (c ClientConfig) Addr(service string) string {
	switch service {
	case "bootapi":
		return c.BootAPI
	case "artifactstore":
		return c.ArtifactStore
	case "dhcpd":
		return c.DHCPD
	case "tftpd":
		return c.TFTPD
	}
	return ""
}

// ConfigEnv names the variable that points at the client config.
const ConfigEnv = "BOOTCHAIN_CONFIG"

// ClientConfigPath is where the client config is looked for: $BOOTCHAIN_CONFIG,
// else $XDG_CONFIG_HOME/bootchain/bootctl.json, else
// ~/.config/bootchain/bootctl.json. getenv is os.Getenv in the tools.
func ClientConfigPath(getenv func(string) string) (string, error) {
	if p := getenv(ConfigEnv); p != "" {
		return p, nil
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "bootchain", "bootctl.json"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("client config: no $%s, $XDG_CONFIG_HOME or home folder: %w", ConfigEnv, err)
		}
	}
	return filepath.Join(home, ".config", "bootchain", "bootctl.json"), nil
}

// ReadClientConfig reads the client config at path. A missing file is
// fs.ErrNotExist (wrapped); unknown fields are an error, so that a typo is not
// silently ignored.
func ReadClientConfig(path string) (ClientConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("client config: %w", err)
	}
	c, err := ParseClientConfig(b)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("client config %s: %w", path, err)
	}
	return c, nil
}

// ParseClientConfig parses a client config: one JSON object of known fields.
func ParseClientConfig(b []byte) (ClientConfig, error) {
	var c ClientConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return ClientConfig{}, err
	}
	if dec.More() {
		return ClientConfig{}, errors.New("more than one JSON value")
	}
	return c, nil
}

// CheckFiles reports the first file the config names that cannot be read, with
// the field that names it.
func (c ClientConfig) CheckFiles(path string) error {
	for _, f := range []struct{ field, file string }{{"ca", c.CA}, {"cert", c.Cert}, {"key", c.Key}, {"token_file", c.TokenFile}} {
		if f.file == "" {
			continue
		}
		fh, err := os.Open(f.file)
		if err != nil {
			hint := ""
			if c.DataDir != "" {
				hint = fmt.Sprintf(" (written by `bootchain up --data-dir %s`: is that data dir gone? start it again, or point %s elsewhere)", c.DataDir, ConfigEnv)
			}
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("client config %s: %q names %s, which does not exist%s", path, f.field, f.file, hint)
			}
			return fmt.Errorf("client config %s: %q: %w", path, f.field, err)
		}
		fh.Close()
	}
	return nil
}

// WriteClientConfig writes c to path (0600: it names a key and may name a token
// file) atomically, creating the folder.
func WriteClientConfig(path string, c ClientConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	return WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// MayReplaceClientConfig reports whether `bootchain up --data-dir dataDir` may
// write path: when there is none, or the one there was written by bootchain for
// the same data dir. A person's own file, or one that does not parse, is kept.
func MayReplaceClientConfig(path, dataDir string) bool {
	c, err := ReadClientConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && c.DataDir != "" && c.DataDir == dataDir
}
