package source

import (
	"context"
	"errors"
	"fmt"
	"io"

	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPC reads artifacts from artifactstore's ArtifactService.
type GRPC struct {
	cli artifactstorev1.ArtifactServiceClient
}

// NewGRPC returns a Source on conn.
func NewGRPC(conn grpc.ClientConnInterface) *GRPC {
	return &GRPC{cli: artifactstorev1.NewArtifactServiceClient(conn)}
}

// Stat implements Source.
func (g *GRPC) Stat(ctx context.Context, name string) (Meta, error) {
	resp, err := g.cli.Stat(ctx, &artifactstorev1.StatRequest{Name: name})
	if err != nil {
		return Meta{}, mapErr(name, err)
	}
	return metaOf(resp.GetArtifact()), nil
}

// Fetch implements Source: the Read stream's first message is the metadata, the
// rest is content.
func (g *GRPC) Fetch(ctx context.Context, name string, w io.Writer) (Meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.cli.Read(ctx, &artifactstorev1.ReadRequest{Name: name})
	if err != nil {
		return Meta{}, mapErr(name, err)
	}
	var m Meta
	first := true
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if first {
				return Meta{}, fmt.Errorf("read %s: stream ended before the metadata", name)
			}
			return m, nil
		}
		if err != nil {
			return Meta{}, mapErr(name, err)
		}
		if first {
			if msg.GetArtifact() == nil {
				return Meta{}, fmt.Errorf("read %s: first message has no metadata", name)
			}
			m = metaOf(msg.GetArtifact())
			first = false
		}
		if len(msg.GetChunk()) > 0 {
			if _, err := w.Write(msg.GetChunk()); err != nil {
				return Meta{}, fmt.Errorf("read %s: %w", name, err)
			}
		}
	}
}

func metaOf(a *artifactstorev1.Artifact) Meta {
	return Meta{Name: a.GetName(), SHA256: a.GetSha256(), Size: a.GetSize()}
}

func mapErr(name string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, name, err)
	}
	return fmt.Errorf("artifactstore %s: %w", name, err)
}
