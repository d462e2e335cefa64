// Package admin implements bootchain.tftpd.v1.TftpService: the cache and the live
// transfer statistics of one tftpd.
package admin

import (
	"context"
	"errors"
	"strings"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/services/tftpd/internal/cache"
	"github.com/bootchain/bootchain/services/tftpd/internal/transfer"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service is the gRPC admin service.
type Service struct {
	tftpdv1.UnimplementedTftpServiceServer
	Cache     *cache.Cache
	Transfers *transfer.Server
	// Site this tftpd serves: a caller limited to other sites sees nothing.
	Site string
}

// ListCacheEntries implements TftpService.
func (s *Service) ListCacheEntries(ctx context.Context, _ *tftpdv1.ListCacheEntriesRequest) (*tftpdv1.ListCacheEntriesResponse, error) {
	resp := &tftpdv1.ListCacheEntriesResponse{}
	if !auth.MaySite(ctx, s.Site) {
		return resp, nil
	}
	for _, e := range s.Cache.List() {
		resp.Entries = append(resp.Entries, entryProto(e))
	}
	return resp, nil
}

// EvictCacheEntry implements TftpService.
func (s *Service) EvictCacheEntry(ctx context.Context, req *tftpdv1.EvictCacheEntryRequest) (*tftpdv1.EvictCacheEntryResponse, error) {
	if err := auth.RequireSite(ctx, s.Site); err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.GetName()) == "" {
		return nil, apierr.InvalidArgument("name", "an artifact name is required")
	}
	e, err := s.Cache.Evict(req.GetName())
	if errors.Is(err, cache.ErrNotCached) {
		return nil, apierr.NotFound("cache entry", req.GetName())
	}
	if err != nil {
		return nil, apierr.FromError(err)
	}
	return &tftpdv1.EvictCacheEntryResponse{Entry: entryProto(e)}, nil
}

// GetTransferStats implements TftpService.
func (s *Service) GetTransferStats(ctx context.Context, _ *tftpdv1.GetTransferStatsRequest) (*tftpdv1.GetTransferStatsResponse, error) {
	if err := auth.RequireSite(ctx, s.Site); err != nil {
		return nil, err
	}
	st := s.Transfers.Stats()
	resp := &tftpdv1.GetTransferStatsResponse{Stats: &tftpdv1.TransferStats{
		Active: st.Active, Started: st.Started, Succeeded: st.Succeeded, Failed: st.Failed, Aborted: st.Aborted,
		RefusedBusy: st.RefusedBusy, RefusedAccess: st.RefusedAccess, NotFound: st.NotFound,
		RefusedWrites: st.RefusedWrites, Dropped: st.Dropped, BytesSent: st.BytesSent, Retransmits: st.Retransmits,
		CacheHits: st.CacheHits, CacheMisses: st.CacheMisses, FetchFailures: st.FetchFailures,
	}}
	for _, a := range s.Transfers.Running() {
		resp.Active = append(resp.Active, &tftpdv1.ActiveTransfer{
			Client: a.Client, File: a.File, Artifact: a.Artifact, Bytes: a.Bytes, Size: a.Size,
			Blksize: a.Blksize, StartTime: timestamppb.New(a.Start),
		})
	}
	return resp, nil
}

func entryProto(e cache.Entry) *tftpdv1.CacheEntry {
	ce := &tftpdv1.CacheEntry{
		Name: e.Name, Sha256: e.SHA256, Size: e.Size, Verified: e.Verified, Stale: e.Stale, Hits: e.Hits,
		FetchTime: timestamppb.New(e.FetchTime),
	}
	if !e.LastUsed.IsZero() {
		ce.LastUsed = timestamppb.New(e.LastUsed)
	}
	return ce
}
