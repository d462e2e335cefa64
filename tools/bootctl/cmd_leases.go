package main

import (
	"io"
	"net/netip"
	"strconv"
	"strings"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/spf13/cobra"
)

func leaseClient(g *Global) (dhcpdv1.LeaseServiceClient, error) {
	cc, err := g.Conn("dhcpd")
	if err != nil {
		return nil, err
	}
	return dhcpdv1.NewLeaseServiceClient(cc), nil
}

func leasesCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "leases",
		Aliases: []string{"lease"},
		Short:   "List, show and release dhcpd's leases",
		Long: `Leases are the addresses dhcpd handed out (in authoritative mode). Leases are
created by DHCP clients, not by bootctl; "release" frees one early.`,
	},
		leasesListCommand(g),
		leasesGetCommand(g),
		leasesReleaseCommand(g),
	)
}

var leaseStateWords = enumWords("LEASE_STATE_", dhcpdv1.LeaseState_value)

func leaseStateName(s dhcpdv1.LeaseState) string { return enumName(s.String(), "LEASE_STATE_") }

func leaseRelay(l *dhcpdv1.Lease) string {
	if l.GetGiaddr() == "" {
		return "-"
	}
	relay := l.GetGiaddr()
	if c := l.GetRelay().GetCircuitId(); len(c) > 0 {
		relay += " circuit=" + strconv.Quote(string(c))
	}
	return relay
}

func leaseTable(w io.Writer, ls []*dhcpdv1.Lease) error {
	rows := make([][]string, 0, len(ls))
	for _, l := range ls {
		rows = append(rows, []string{l.GetSite(), l.GetIp(), l.GetMac(), leaseStateName(l.GetState()), ts(l.GetExpireTime()), dash(l.GetHostname()), leaseRelay(l), dash(l.GetServer())})
	}
	return writeTable(w, []string{"SITE", "IP", "MAC", "STATE", "EXPIRES", "HOSTNAME", "RELAY", "SERVER"}, rows)
}

func showLease(g *Global, l *dhcpdv1.Lease) error {
	return g.show(l, func(w io.Writer) error {
		return writeDetail(w, []field{
			{"Site", l.GetSite()}, {"IP", l.GetIp()}, {"MAC", l.GetMac()}, {"State", leaseStateName(l.GetState())},
			{"Expires", ts(l.GetExpireTime())}, {"Hostname", dash(l.GetHostname())}, {"Relay", leaseRelay(l)}, {"Server", dash(l.GetServer())},
		})
	})
}

func leasesListCommand(g *Global) *cobra.Command {
	var site, mac, state string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List leases",
		Example: `  bootctl leases list --state bound
  bootctl leases list --mac 52:54:00:12:34:56`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &dhcpdv1.ListLeasesRequest{Site: site, Mac: mac}
			if state != "" {
				v, err := parseEnum("state", state, "LEASE_STATE_", dhcpdv1.LeaseState_value)
				if err != nil {
					return err
				}
				req.State = dhcpdv1.LeaseState(v)
			}
			cli, err := leaseClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.ListLeases(ctx, req)
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error { return leaseTable(w, resp.GetLeases()) })
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "only this site")
	cmd.Flags().StringVar(&mac, "mac", "", "only this MAC")
	cmd.Flags().StringVar(&state, "state", "", "only this state: "+strings.Join(leaseStateWords, ", "))
	_ = cmd.RegisterFlagCompletionFunc("state", words(leaseStateWords...))
	_ = cmd.RegisterFlagCompletionFunc("site", complete(g, siteNames))
	_ = cmd.RegisterFlagCompletionFunc("mac", complete(g, machineMACs))
	return withFields(cmd, map[string]string{"site": "--site", "mac": "--mac", "state": "--state"})
}

func leasesGetCommand(g *Global) *cobra.Command {
	var site string
	cmd := &cobra.Command{
		Use:     "get IP|MAC",
		Aliases: []string{"show"},
		Short:   "Show the lease of an address or a machine",
		Example: `  bootctl leases get 10.0.0.23
  bootctl leases get 52:54:00:12:34:56`,
		Args: argNames("IP|MAC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &dhcpdv1.GetLeaseRequest{Site: site}
			if _, err := netip.ParseAddr(args[0]); err == nil {
				req.Ip = args[0]
			} else {
				req.Mac = args[0]
			}
			cli, err := leaseClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.GetLease(ctx, req)
			if err != nil {
				return err
			}
			return showLease(g, resp.GetLease())
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "site (default: the one dhcpd serves)")
	return withFields(cmd, map[string]string{"site": "--site", "ip": "IP|MAC", "mac": "IP|MAC"})
}

func leasesReleaseCommand(g *Global) *cobra.Command {
	var site string
	cmd := &cobra.Command{
		Use:     "release IP",
		Short:   "Release a lease: the address is free again",
		Example: `  bootctl leases release 10.0.0.23`,
		Args:    argNames("IP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, err := leaseClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.ReleaseLease(ctx, &dhcpdv1.ReleaseLeaseRequest{Site: site, Ip: args[0]})
			if err != nil {
				return err
			}
			return showLease(g, resp.GetLease())
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "site (default: the one dhcpd serves)")
	return withFields(cmd, map[string]string{"site": "--site", "ip": "IP"})
}

func poolsCommand(g *Global) *cobra.Command {
	var site string
	cmd := &cobra.Command{
		Use:     "pools",
		Aliases: []string{"pool"},
		Short:   "Show dhcpd's address pools and their use",
		Example: `  bootctl pools --site lab`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := leaseClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.ListPools(ctx, &dhcpdv1.ListPoolsRequest{Site: site})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error { return poolTable(w, resp.GetPools()) })
		},
	}
	cmd.Flags().StringVar(&site, "site", "", "only this site")
	return withFields(cmd, map[string]string{"site": "--site"})
}

func poolTable(w io.Writer, ps []*dhcpdv1.PoolUsage) error {
	u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		rows = append(rows, []string{p.GetSite(), p.GetSubnet(), p.GetStart() + "-" + p.GetEnd(), u(p.GetSize()), u(p.GetBound()), u(p.GetOffered()), u(p.GetDeclined()), u(p.GetFree())})
	}
	return writeTable(w, []string{"SITE", "SUBNET", "POOL", "SIZE", "BOUND", "OFFERED", "DECLINED", "FREE"}, rows)
}
