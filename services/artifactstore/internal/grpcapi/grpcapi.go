// Package grpcapi implements bootchain.artifactstore.v1.ArtifactService over the
// catalog, and maps catalog errors to gRPC statuses in one table.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/artifactsig"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/services/artifactstore/internal/blobstore"
	"github.com/bootchain/bootchain/services/artifactstore/internal/catalog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ChunkSize is the size of the chunks Read sends.
const ChunkSize = 256 << 10

// Service is the gRPC service.
type Service struct {
	artifactv1.UnimplementedArtifactServiceServer
	cat     *catalog.Catalog
	maxSize int64
	log     *slog.Logger
}

// New returns the service; maxSize bounds uploads (0: no bound).
func New(cat *catalog.Catalog, maxSize int64, log *slog.Logger) *Service {
	return &Service{cat: cat, maxSize: maxSize, log: log}
}

// toStatus is the one table from catalog and blobstore errors to gRPC statuses.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *catalog.FieldError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierr.FromError(err)
	case errors.Is(err, catalog.ErrUntrusted):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, artifactsig.ErrUnsigned), errors.Is(err, artifactsig.ErrBadSig):
		// Only uploads check signatures against the header: the field is named.
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, catalog.ErrExists):
		return status.Error(codes.AlreadyExists, "header.replaces_sha256: "+err.Error())
	case errors.Is(err, catalog.ErrStale):
		field := "sha256"
		if errors.As(err, &fe) {
			field, err = fe.Field, fe.Err
		}
		return apierr.FailedPrecondition(field, "%v", err)
	case errors.Is(err, catalog.ErrCorrupt):
		return status.Error(codes.DataLoss, err.Error())
	case errors.As(err, &fe):
		return apierr.InvalidArgument(fe.Field, "%v", fe.Err)
	case errors.Is(err, catalog.ErrReferenced):
		return apierr.FailedPrecondition("name", "%v", err)
	case errors.Is(err, catalog.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, blobstore.ErrDiskFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, catalog.ErrOrigin):
		return status.Error(codes.Unavailable, err.Error())
	}
	return apierr.FromError(err)
}

// Upload stores a client stream: header, then chunks.
func (s *Service) Upload(stream artifactv1.ArtifactService_UploadServer) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return apierr.InvalidArgument("header", "empty upload stream")
		}
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return apierr.InvalidArgument("header", "the first message must be the header")
	}
	up := catalog.Upload{Header: h, Next: func() ([]byte, error) {
		msg, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if msg.GetHeader() != nil {
			return nil, apierr.InvalidArgument("header", "a second header in the stream")
		}
		return msg.GetChunk(), nil
	}}
	a, unchanged, err := s.cat.Put(stream.Context(), up, s.maxSize)
	if err != nil {
		s.cat.Metrics().Uploads.WithLabelValues("error").Inc()
		s.log.Info("upload failed", "artifact", h.GetName(), "err", err)
		return toStatus(err)
	}
	s.cat.Metrics().Uploads.WithLabelValues("ok").Inc()
	s.log.Info("artifact stored", "artifact", a.GetName(), "sha256", a.GetSha256(), "bytes", a.GetSize(), "unchanged", unchanged)
	return stream.SendAndClose(&artifactv1.UploadResponse{Artifact: a, Unchanged: unchanged})
}

// Stat returns one artifact's metadata.
func (s *Service) Stat(ctx context.Context, req *artifactv1.StatRequest) (*artifactv1.StatResponse, error) {
	a, err := s.cat.Lookup(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &artifactv1.StatResponse{Artifact: a, Local: s.cat.Local(a)}, nil
}

// List returns artifacts by name.
func (s *Service) List(ctx context.Context, req *artifactv1.ListRequest) (*artifactv1.ListResponse, error) {
	return &artifactv1.ListResponse{Artifacts: s.cat.List(req.GetPrefix())}, nil
}

// Delete removes an artifact.
func (s *Service) Delete(ctx context.Context, req *artifactv1.DeleteRequest) (*artifactv1.DeleteResponse, error) {
	a, refs, err := s.cat.Delete(ctx, req.GetName(), req.GetForce(), req.GetSha256())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("artifact deleted", "artifact", a.GetName(), "forced_past", refs)
	return &artifactv1.DeleteResponse{Artifact: a, ReferencedBy: refs}, nil
}

// Read streams an artifact's content.
func (s *Service) Read(req *artifactv1.ReadRequest, stream artifactv1.ArtifactService_ReadServer) error {
	ctx := stream.Context()
	if req.GetOffset() < 0 {
		return apierr.InvalidArgument("offset", "negative")
	}
	if req.GetLength() < 0 {
		return apierr.InvalidArgument("length", "negative")
	}
	if d := req.GetSha256(); d != "" && !blobstore.ValidDigest(d) {
		return apierr.InvalidArgument("sha256", "%v", blobstore.ErrBadDigest)
	}
	a, err := s.cat.Lookup(ctx, req.GetName())
	if err != nil && !(req.GetSha256() != "" && errors.Is(err, catalog.ErrNotFound)) {
		return toStatus(err)
	}
	if d := req.GetSha256(); d != "" && a.GetSha256() != d {
		// A replica asks for the exact content its metadata names; serve that blob if
		// it is still here even though the name has moved on (or gone).
		if a == nil {
			a = &artifactv1.Artifact{Name: req.GetName()}
		} else {
			a = &artifactv1.Artifact{Name: a.GetName(), ContentType: a.GetContentType(), OriginSite: a.GetOriginSite()}
		}
		a.Sha256 = d
		f, err := s.cat.OpenDigest(ctx, req.GetName(), d)
		if errors.Is(err, catalog.ErrNotFound) {
			return toStatus(fmt.Errorf("%w: %q with sha256 %s", catalog.ErrNotFound, req.GetName(), d))
		}
		if err != nil {
			return toStatus(err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return toStatus(err)
		}
		a.Size = fi.Size()
		return s.send(stream, req, a, f)
	}
	f, err := s.cat.Open(ctx, a)
	if err != nil {
		return toStatus(err)
	}
	return s.send(stream, req, a, f)
}

func (s *Service) send(stream artifactv1.ArtifactService_ReadServer, req *artifactv1.ReadRequest, a *artifactv1.Artifact, f io.ReadSeekCloser) error {
	defer f.Close()
	s.cat.Metrics().ReadStreams.Inc()
	if req.GetOffset() > a.GetSize() {
		return apierr.InvalidArgument("offset", "%d is past the end (%d bytes)", req.GetOffset(), a.GetSize())
	}
	remain := a.GetSize() - req.GetOffset()
	if req.GetLength() > 0 && req.GetLength() < remain {
		remain = req.GetLength()
	}
	if _, err := f.Seek(req.GetOffset(), io.SeekStart); err != nil {
		return toStatus(err)
	}
	buf := make([]byte, ChunkSize)
	first := &artifactv1.ReadResponse{Artifact: a}
	for remain > 0 || first != nil {
		n := 0
		if remain > 0 {
			var err error
			n, err = io.ReadFull(f, buf[:min(int64(len(buf)), remain)])
			if err != nil {
				return toStatus(fmt.Errorf("read content of %q: %w", a.GetName(), err))
			}
		}
		msg := first
		if msg == nil {
			msg = &artifactv1.ReadResponse{}
		}
		first = nil
		msg.Chunk = buf[:n]
		if err := stream.Send(msg); err != nil {
			return err
		}
		remain -= int64(n)
	}
	return nil
}
