package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
)

func runTftp(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "tftp", args, map[string]func(context.Context, *Global, []string) error{
		"cache": tftpCache,
		"stats": tftpStats,
	})
}

func tftpClient(g *Global) (tftpdv1.TftpServiceClient, error) {
	cc, err := g.Conn("tftpd")
	if err != nil {
		return nil, err
	}
	return tftpdv1.NewTftpServiceClient(cc), nil
}

func tftpCache(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "tftp cache", args, map[string]func(context.Context, *Global, []string) error{
		"list": func(ctx context.Context, g *Global, args []string) error {
			if err := flag.NewFlagSet("tftp cache list", flag.ContinueOnError).Parse(args); err != nil {
				return err
			}
			cli, err := tftpClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			resp, err := cli.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{})
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, resp)
			}
			rows := make([][]string, 0, len(resp.GetEntries()))
			for _, e := range resp.GetEntries() {
				state := "ok"
				switch {
				case e.GetStale():
					state = "stale"
				case !e.GetVerified():
					state = "unverified"
				}
				rows = append(rows, []string{e.GetName(), shortSHA(e.GetSha256()), strconv.FormatInt(e.GetSize(), 10),
					state, strconv.FormatInt(e.GetHits(), 10), ts(e.GetFetchTime()), ts(e.GetLastUsed())})
			}
			return printTable(g, []string{"NAME", "SHA256", "SIZE", "STATE", "HITS", "FETCHED", "LAST USED"}, rows)
		},
		"evict": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("tftp cache evict: want one artifact name")
			}
			cli, err := tftpClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			resp, err := cli.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, resp)
			}
			_, err = fmt.Fprintf(g.Out, "evicted %s (%s, %d bytes)\n", resp.GetEntry().GetName(), shortSHA(resp.GetEntry().GetSha256()), resp.GetEntry().GetSize())
			return err
		},
	})
}

func tftpStats(ctx context.Context, g *Global, args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("tftp stats: no arguments expected")
	}
	cli, err := tftpClient(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	resp, err := cli.GetTransferStats(ctx, &tftpdv1.GetTransferStatsRequest{})
	if err != nil {
		return err
	}
	if g.JSON() {
		return printJSON(g, resp)
	}
	s := resp.GetStats()
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	if err := printTable(g, []string{"COUNTER", "VALUE"}, [][]string{
		{"active", i(s.GetActive())}, {"started", i(s.GetStarted())}, {"succeeded", i(s.GetSucceeded())},
		{"failed", i(s.GetFailed())}, {"aborted by client", i(s.GetAborted())}, {"refused busy", i(s.GetRefusedBusy())},
		{"refused access", i(s.GetRefusedAccess())}, {"not found", i(s.GetNotFound())}, {"refused writes", i(s.GetRefusedWrites())},
		{"dropped packets", i(s.GetDropped())}, {"bytes sent", i(s.GetBytesSent())}, {"retransmits", i(s.GetRetransmits())},
		{"cache hits", i(s.GetCacheHits())}, {"cache misses", i(s.GetCacheMisses())}, {"fetch failures", i(s.GetFetchFailures())},
	}); err != nil {
		return err
	}
	if len(resp.GetActive()) == 0 {
		return nil
	}
	fmt.Fprintln(g.Out)
	rows := make([][]string, 0, len(resp.GetActive()))
	for _, a := range resp.GetActive() {
		rows = append(rows, []string{a.GetClient(), a.GetFile(), a.GetArtifact(), fmt.Sprintf("%d/%d", a.GetBytes(), a.GetSize()), i(a.GetBlksize()), ago(a.GetStartTime())})
	}
	return printTable(g, []string{"CLIENT", "FILE", "ARTIFACT", "BYTES", "BLKSIZE", "STARTED"}, rows)
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
