package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTransient(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want bool
	}{
		"nil":                    {nil, false},
		"no leader":              {rpctypes.ErrNoLeader, true},
		"timeout by leader fail": {fmt.Errorf("job x: %w", rpctypes.ErrTimeoutDueToLeaderFail), true},
		"leader changed":         {rpctypes.ErrLeaderChanged, true},
		"grpc unavailable":       {status.Error(codes.Unavailable, "connection refused"), true},
		"call timeout":           {fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		"canceled":               {context.Canceled, false},
		"request too large":      {rpctypes.ErrRequestTooLarge, false},
		"conflict":               {ErrConflict, false},
		"not found":              {ErrNotFound, false},
		"permission denied grpc": {status.Error(codes.PermissionDenied, "no"), false},
		"plain error":            {errors.New("boom"), false},
	} {
		if got := Transient(tc.err); got != tc.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", name, tc.err, got, tc.want)
		}
	}
}

func TestRetryTransient(t *testing.T) {
	ctx := context.Background()
	calls := 0
	n, err := RetryTransient(ctx, 5*time.Second, func() error {
		if calls++; calls <= 3 {
			return rpctypes.ErrNoLeader
		}
		return nil
	})
	if err != nil || n != 3 || calls != 4 {
		t.Errorf("through an election: retries %d, calls %d, err %v; want 3, 4, nil", n, calls, err)
	}
	calls = 0
	n, err = RetryTransient(ctx, 5*time.Second, func() error { calls++; return ErrConflict })
	if !errors.Is(err, ErrConflict) || n != 0 || calls != 1 {
		t.Errorf("permanent error: retries %d, calls %d, err %v; want one call", n, calls, err)
	}
	start := time.Now()
	n, err = RetryTransient(ctx, 300*time.Millisecond, func() error { return rpctypes.ErrNoLeader })
	if !errors.Is(err, rpctypes.ErrNoLeader) || n == 0 || time.Since(start) > 5*time.Second {
		t.Errorf("past the budget: retries %d, err %v after %v; want the last error within the budget", n, err, time.Since(start))
	}
}
