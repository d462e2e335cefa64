package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/spf13/pflag"
)

// configFlag names the client config file; BOOTCHAIN_CONFIG sets it too.
const configFlag = "config"

// applyConfig fills the global flags that neither the command line nor a
// BOOTCHAIN_* variable set from the client config (pkg/pki.ClientConfig): the file
// --config or $BOOTCHAIN_CONFIG names, else $XDG_CONFIG_HOME/bootchain/bootctl.json,
// else ~/.config/bootchain/bootctl.json. A default location with no file is no
// config; a file that was named but is missing, that does not parse or that names
// files which are not there is an error. It returns the file it read, or "".
func applyConfig(flags *pflag.FlagSet) (string, error) {
	path, _ := flags.GetString(configFlag)
	named := path != ""
	if !named {
		var err error
		if path, err = pki.ClientConfigPath(os.Getenv); err != nil {
			return "", nil
		}
	}
	c, err := pki.ReadClientConfig(path)
	if err != nil {
		if !named && errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	values := map[string]string{
		"tls-ca": c.CA, "tls-cert": c.Cert, "tls-key": c.Key, "tls-server-name": c.ServerName,
		// P1's bootctl reads a bearer token from this file; until it has the flag,
		// token_file is not used.
		"token-file": c.TokenFile,
	}
	for _, s := range services {
		values[addrFlag(s)] = c.Addr(s)
	}
	// Only what the file fills in is checked: a flag that overrides a field
	// makes the field's file irrelevant.
	var used pki.ClientConfig
	used.DataDir = c.DataDir
	for name, v := range values {
		f := flags.Lookup(name)
		if v == "" || f == nil || f.Changed {
			continue
		}
		if err := flags.Set(name, v); err != nil {
			return "", fmt.Errorf("client config %s: %s: %w", path, name, err)
		}
		switch name {
		case "tls-ca":
			used.CA = v
		case "tls-cert":
			used.Cert = v
		case "tls-key":
			used.Key = v
		case "token-file":
			used.TokenFile = v
		}
	}
	if err := used.CheckFiles(path); err != nil {
		return "", err
	}
	return path, nil
}
