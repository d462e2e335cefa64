// Package config fills command-line flags from BOOTCHAIN_* environment variables, so
// every binary can be configured either way (flags win).
//
//	fs := flag.NewFlagSet("dhcpd", flag.ExitOnError)
//	fs.StringVar(&site, "site", "default", "site served")
//	config.Parse(fs, os.Args[1:]) // --site or BOOTCHAIN_SITE
package config

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName is the variable for a flag: "etcd-endpoints" -> BOOTCHAIN_ETCD_ENDPOINTS.
func EnvName(flagName string) string {
	r := strings.NewReplacer("-", "_", ".", "_")
	return "BOOTCHAIN_" + strings.ToUpper(r.Replace(flagName))
}

// Parse parses args, then sets every flag not given on the command line from its
// environment variable, if set.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return ApplyEnv(fs)
}

// ApplyEnv sets flags not given on the command line from the environment.
func ApplyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
			}
		}
	})
	return err
}

// StringList is a flag that takes a comma-separated list.
type StringList []string

func (l *StringList) String() string { return strings.Join(*l, ",") }

// Set replaces the list.
func (l *StringList) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
