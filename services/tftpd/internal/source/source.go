// Package source is where tftpd's cache gets artifacts from: artifactstore over
// gRPC in production, anything that satisfies Source in tests.
package source

import (
	"context"
	"errors"
	"io"
)

// Errors a Source returns; compare with errors.Is.
var (
	// ErrNotFound: the artifact does not exist.
	ErrNotFound = errors.New("artifact not found")
	// ErrUnavailable: the source cannot be reached now; a cached copy may be served.
	ErrUnavailable = errors.New("artifact source unavailable")
)

// Meta describes an artifact's content.
type Meta struct {
	// Name of the artifact.
	Name string
	// SHA256 of the content, lowercase hex.
	SHA256 string
	// Size in bytes.
	Size int64
}

// Source reads artifacts.
type Source interface {
	// Stat returns the artifact's metadata.
	Stat(ctx context.Context, name string) (Meta, error)
	// Fetch writes the artifact's content to w and returns its metadata as the
	// source announced it (the caller verifies the content against it).
	Fetch(ctx context.Context, name string, w io.Writer) (Meta, error)
}
