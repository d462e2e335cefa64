package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
)

func runLeases(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "leases", args, map[string]func(context.Context, *Global, []string) error{
		"list": leasesList, "get": leasesGet, "release": leasesRelease,
	})
}

func leaseClient(g *Global) (dhcpdv1.LeaseServiceClient, error) {
	cc, err := g.Conn("dhcpd")
	if err != nil {
		return nil, err
	}
	return dhcpdv1.NewLeaseServiceClient(cc), nil
}

func leaseState(s string) (dhcpdv1.LeaseState, error) {
	if s == "" {
		return dhcpdv1.LeaseState_LEASE_STATE_UNSPECIFIED, nil
	}
	v, ok := dhcpdv1.LeaseState_value["LEASE_STATE_"+strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("--state %q: want offered, bound, released, declined or expired", s)
	}
	return dhcpdv1.LeaseState(v), nil
}

func stateName(s dhcpdv1.LeaseState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "LEASE_STATE_"))
}

func printLeases(g *Global, ls ...*dhcpdv1.Lease) error {
	if g.JSON() {
		if len(ls) == 1 {
			return printJSON(g, ls[0])
		}
		return printJSON(g, &dhcpdv1.ListLeasesResponse{Leases: ls})
	}
	rows := make([][]string, 0, len(ls))
	for _, l := range ls {
		relay := "-"
		if l.GetGiaddr() != "" {
			relay = l.GetGiaddr()
			if c := l.GetRelay().GetCircuitId(); len(c) > 0 {
				relay += " circuit=" + strconv.Quote(string(c))
			}
		}
		host := l.GetHostname()
		if host == "" {
			host = "-"
		}
		rows = append(rows, []string{l.GetSite(), l.GetIp(), l.GetMac(), stateName(l.GetState()), ts(l.GetExpireTime()), host, relay, l.GetServer()})
	}
	return printTable(g, []string{"SITE", "IP", "MAC", "STATE", "EXPIRES", "HOSTNAME", "RELAY", "SERVER"}, rows)
}

func leasesList(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("leases list", flag.ContinueOnError)
	site := fs.String("site", "", "only this site")
	mac := fs.String("mac", "", "only this MAC")
	state := fs.String("state", "", "only this state: offered, bound, released, declined, expired")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := leaseState(*state)
	if err != nil {
		return err
	}
	cli, err := leaseClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.ListLeases(ctx, &dhcpdv1.ListLeasesRequest{Site: *site, Mac: *mac, State: st})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, resp)
	}
	return printLeases(g, resp.GetLeases()...)
}

func leasesGet(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("leases get", flag.ContinueOnError)
	site := fs.String("site", "", "site (default: the one dhcpd serves)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("leases get: want one IP or MAC")
	}
	req := &dhcpdv1.GetLeaseRequest{Site: *site}
	if _, err := netip.ParseAddr(fs.Arg(0)); err == nil {
		req.Ip = fs.Arg(0)
	} else {
		req.Mac = fs.Arg(0)
	}
	cli, err := leaseClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.GetLease(ctx, req)
	if err != nil {
		return err
	}
	return printLeases(g, resp.GetLease())
}

func leasesRelease(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("leases release", flag.ContinueOnError)
	site := fs.String("site", "", "site (default: the one dhcpd serves)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("leases release: want one IP")
	}
	cli, err := leaseClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.ReleaseLease(ctx, &dhcpdv1.ReleaseLeaseRequest{Site: *site, Ip: fs.Arg(0)})
	if err != nil {
		return err
	}
	return printLeases(g, resp.GetLease())
}

func poolsList(ctx context.Context, g *Global, args []string) error {
	fs := flag.NewFlagSet("pools", flag.ContinueOnError)
	site := fs.String("site", "", "only this site")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cli, err := leaseClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.ListPools(ctx, &dhcpdv1.ListPoolsRequest{Site: *site})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, resp)
	}
	rows := make([][]string, 0, len(resp.GetPools()))
	for _, p := range resp.GetPools() {
		u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
		rows = append(rows, []string{p.GetSite(), p.GetSubnet(), p.GetStart() + "-" + p.GetEnd(), u(p.GetSize()), u(p.GetBound()), u(p.GetOffered()), u(p.GetDeclined()), u(p.GetFree())})
	}
	return printTable(g, []string{"SITE", "SUBNET", "POOL", "SIZE", "BOUND", "OFFERED", "DECLINED", "FREE"}, rows)
}
