package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
)

// tokenCmd is `bootchain token create|revoke`: it writes straight to etcd, so
// that the first admin token of a deployment on an external etcd exists before
// any bootchain server does (anyone who can write etcd is admin anyway).
func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "revoke") {
		return errors.New("usage: bootchain token create --name NAME --role ROLE [--sites a,b] [--ttl 720h] [etcd flags]\n       bootchain token revoke --id ID [etcd flags]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("bootchain token "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := config.StringList{"127.0.0.1:2379"}
	fs.Var(&endpoints, "etcd-endpoints", "comma-separated etcd endpoints")
	var etcdTLS tlsconf.Files
	etcdTLS.AddClientFlags(fs, "etcd-")
	timeout := fs.Duration("etcd-timeout", 5*time.Second, "timeout of each etcd call")
	name := fs.String("name", "", "name of the token's holder (create)")
	role := fs.String("role", "", "role: viewer, operator, admin or service (create)")
	var sites config.StringList
	fs.Var(&sites, "sites", "limit the token to these sites, comma-separated (create; default all)")
	ttl := fs.Duration("ttl", 0, "lifetime, e.g. 720h (create; default: never expires)")
	id := fs.String("id", "", "id of the token to revoke (revoke)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bootchain token %s: unexpected argument %q", verb, fs.Arg(0))
	}
	var spec auth.TokenSpec
	if verb == "create" {
		r, err := auth.ParseRole(*role)
		if err != nil {
			return fmt.Errorf("--role: %w", err)
		}
		spec = auth.TokenSpec{Name: *name, Role: r, Sites: sites, TTL: *ttl, CreatedBy: "bootchain token create"}
		if err := spec.Validate(); err != nil {
			return err
		}
	} else if !auth.ValidTokenID(strings.TrimSpace(*id)) {
		return fmt.Errorf("--id %q: want the 16 hex characters between bct_ and the second '_'", *id)
	}
	tlsCfg, err := etcdTLS.Client()
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Config{Endpoints: endpoints, TLS: tlsCfg, RequestTimeout: *timeout})
	if err != nil {
		return err
	}
	defer st.Close()
	if verb == "revoke" {
		if err := auth.RevokeToken(ctx, st, strings.TrimSpace(*id)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked token %s\n", *id)
		return nil
	}
	tok, rec, err := auth.MintToken(ctx, st, spec)
	if err != nil {
		return err
	}
	exp := "never"
	if rec.GetExpireTime() != nil {
		exp = rec.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "token %s for %s (role %s, expires %s): shown once\n", rec.GetId(), rec.GetName(), rec.GetRole(), exp)
	fmt.Fprintln(stdout, tok)
	return nil
}
