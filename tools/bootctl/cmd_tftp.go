package main

import (
	"fmt"
	"io"
	"strconv"

	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/spf13/cobra"
)

func tftpClient(g *Global) (tftpdv1.TftpServiceClient, error) {
	cc, err := g.Conn("tftpd")
	if err != nil {
		return nil, err
	}
	return tftpdv1.NewTftpServiceClient(cc), nil
}

func tftpCommand(g *Global) *cobra.Command {
	cache := group(&cobra.Command{
		Use:   "cache",
		Short: "List and evict tftpd's cached artifacts",
	},
		tftpCacheListCommand(g),
		tftpCacheEvictCommand(g),
	)
	return group(&cobra.Command{
		Use:   "tftp",
		Short: "tftpd: its artifact cache and transfer counters",
	},
		cache,
		tftpStatsCommand(g),
	)
}

func cacheState(e *tftpdv1.CacheEntry) string {
	switch {
	case e.GetStale():
		return "stale"
	case !e.GetVerified():
		return "unverified"
	}
	return "ok"
}

func cacheTable(w io.Writer, es []*tftpdv1.CacheEntry) error {
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		rows = append(rows, []string{e.GetName(), shortSHA(e.GetSha256()), humanBytes(e.GetSize()), cacheState(e), strconv.FormatInt(e.GetHits(), 10), ts(e.GetFetchTime()), ts(e.GetLastUsed())})
	}
	return writeTable(w, []string{"NAME", "SHA256", "SIZE", "STATE", "HITS", "FETCHED", "LAST USED"}, rows)
}

func tftpCacheListCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the artifacts tftpd holds",
		Example: `  bootctl tftp cache list`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := tftpClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.ListCacheEntries(ctx, &tftpdv1.ListCacheEntriesRequest{})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error { return cacheTable(w, resp.GetEntries()) })
		},
	}
}

func tftpCacheEvictCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "evict NAME",
		Aliases: []string{"delete", "rm"},
		Short:   "Drop an artifact from tftpd's cache (it is fetched again on next use)",
		Example: `  bootctl tftp cache evict ipxe.efi`,
		Args:    argNames("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, err := tftpClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error {
				e := resp.GetEntry()
				_, err := fmt.Fprintf(w, "evicted %s (%s, %s)\n", e.GetName(), shortSHA(e.GetSha256()), humanBytes(e.GetSize()))
				return err
			})
		},
	}
	return withFields(cmd, map[string]string{"name": "NAME"})
}

func tftpStatsCommand(g *Global) *cobra.Command {
	return &cobra.Command{
		Use:     "stats",
		Short:   "Show tftpd's transfer counters and the transfers under way",
		Example: `  bootctl tftp stats`,
		Args:    argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := tftpClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			resp, err := cli.GetTransferStats(ctx, &tftpdv1.GetTransferStatsRequest{})
			if err != nil {
				return err
			}
			return g.show(resp, func(w io.Writer) error { return statsView(w, resp) })
		},
	}
}

func statsView(w io.Writer, resp *tftpdv1.GetTransferStatsResponse) error {
	s := resp.GetStats()
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	if err := writeTable(w, []string{"COUNTER", "VALUE"}, [][]string{
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
	fmt.Fprintln(w)
	rows := make([][]string, 0, len(resp.GetActive()))
	for _, a := range resp.GetActive() {
		rows = append(rows, []string{a.GetClient(), a.GetFile(), a.GetArtifact(), fmt.Sprintf("%d/%d", a.GetBytes(), a.GetSize()), i(a.GetBlksize()), ago(a.GetStartTime())})
	}
	return writeTable(w, []string{"CLIENT", "FILE", "ARTIFACT", "BYTES", "BLKSIZE", "STARTED"}, rows)
}
