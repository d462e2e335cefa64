package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"
)

// addTokenFlags binds --token and --token-file (BOOTCHAIN_TOKEN,
// BOOTCHAIN_TOKEN_FILE): the bearer token bootctl presents to every service.
func (g *Global) addTokenFlags(fs *pflag.FlagSet) {
	fs.StringVar(&g.Token, "token", "", "bearer token (bct_...) to present; prefer BOOTCHAIN_TOKEN or --token-file, which stay out of the process list")
	fs.StringVar(&g.TokenFile, "token-file", "", "file holding the bearer token")
}

// bearerToken is the token to present: --token, else the first line of
// --token-file; "" for none.
func (g *Global) bearerToken() (string, error) {
	if g.Token != "" || g.TokenFile == "" {
		return strings.TrimSpace(g.Token), nil
	}
	b, err := os.ReadFile(g.TokenFile)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if tok = strings.TrimSpace(tok); tok == "" {
		return "", fmt.Errorf("--token-file %s: empty", g.TokenFile)
	}
	return tok, nil
}

func credentialClient(g *Global) (bootapiv1.CredentialServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewCredentialServiceClient(cc), nil
}

func tokensCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "tokens",
		Aliases: []string{"token"},
		Short:   "Create, list and revoke API bearer tokens (admin)",
		Long: `A bearer token authenticates a script or a person to every bootchain gRPC API
as "authorization: Bearer bct_<id>_<secret>". It holds a role (viewer,
operator, admin, service), may be limited to sites and may expire. etcd keeps
only a hash of the secret: the token is shown once, when it is created.
Revoking a token takes effect on every service within moments.`,
	},
		tokensCreateCommand(g),
		tokensListCommand(g),
		tokensRevokeCommand(g),
	)
}

func tokensCreateCommand(g *Global) *cobra.Command {
	var role string
	var sites []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME --role ROLE",
		Short: "Create a token and print it (once)",
		Long: `Create a token and print it on standard output, alone on its line, so that it
can be captured; its id and expiry go to standard error. Keep it like a
password: it is not shown again.`,
		Example: `  bootctl tokens create ci-bot --role operator --ttl 720h > ci-bot.token
  bootctl tokens create site-a-viewer --role viewer --sites site-a`,
		Args: argNames("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "" {
				return usageErrorf("%s: --role is required (viewer, operator, admin, service)", cmd.CommandPath())
			}
			c, err := credentialClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			req := &bootapiv1.CreateTokenRequest{Name: args[0], Role: role, Sites: sites}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			r, err := c.CreateToken(ctx, req)
			if err != nil {
				return err
			}
			if g.Output != "table" {
				return g.show(r, nil)
			}
			t := r.GetToken()
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s for %s (role %s, sites %s, expires %s): shown once\n",
				t.GetId(), t.GetName(), t.GetRole(), dash(strings.Join(t.GetSites(), ",")), ts(t.GetExpireTime()))
			_, err = fmt.Fprintln(g.Out, r.GetSecret())
			return err
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "role: viewer, operator, admin or service")
	cmd.Flags().StringSliceVar(&sites, "sites", nil, "limit the token to these sites (default: all sites)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 720h (default: never expires)")
	return cmd
}

func tokensListCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens (never their secrets)",
		Example: `  bootctl tokens list`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := credentialClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.ListTokens(ctx, &bootapiv1.ListTokensRequest{})
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error {
				rows := make([][]string, 0, len(r.GetTokens()))
				for _, t := range r.GetTokens() {
					rows = append(rows, []string{t.GetId(), t.GetName(), t.GetRole(), dash(strings.Join(t.GetSites(), ",")), ts(t.GetCreateTime()), ts(t.GetExpireTime()), dash(t.GetCreatedBy())})
				}
				return writeTable(w, []string{"ID", "NAME", "ROLE", "SITES", "CREATED", "EXPIRES", "CREATED BY"}, rows)
			})
		},
	}
}

func tokensRevokeCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: every service refuses it from then on",
		Example: `  bootctl tokens revoke 3f2a9c0d1e4b5a69
  bootctl tokens list -o json | jq -r '.tokens[] | select(.name=="ci-bot") | .id' | xargs -n1 bootctl tokens revoke`,
		Args: argNames("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			// Accept the whole token too, and revoke by its public id: the
			// secret is not sent.
			if strings.HasPrefix(id, "bct_") && len(id) > 20 {
				id = id[4:20]
			}
			if id == "" {
				return errors.New("empty id")
			}
			c, err := credentialClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			if _, err := c.RevokeToken(ctx, &bootapiv1.RevokeTokenRequest{Id: id}); err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.Out, "revoked token %s\n", id)
			return err
		},
	}
}
