package store

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Transient reports whether err is how etcd fails while its cluster elects a
// leader (or this client's member is gone): Unavailable ("no leader", "request
// timed out, possibly due to previous leader failure", "leader changed"), or no
// answer within the call's own timeout. The same call may succeed a moment later.
// The caller's own cancellation is not transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// etcd's client turns gRPC statuses into rpctypes.EtcdError, which has a
	// Code but no GRPCStatus.
	var coded interface{ Code() codes.Code }
	code := status.Code(err)
	if errors.As(err, &coded) {
		code = coded.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// RetryTransient runs op until it returns nil or an error that is not
// Transient, ctx ends, or budget has passed since the first try; waits double
// from 50 ms to 1 s. It returns op's last error and how many times it tried
// again. op must be safe to run twice: a write that etcd applied but did not
// answer is tried again (a compare-and-swap then fails its compare).
func RetryTransient(ctx context.Context, budget time.Duration, op func() error) (retries int, err error) {
	start := time.Now()
	wait := 50 * time.Millisecond
	for {
		err = op()
		if !Transient(err) || ctx.Err() != nil || time.Since(start)+wait > budget {
			return retries, err
		}
		retries++
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return retries, err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}
