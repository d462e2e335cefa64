package store

import (
	"context"
)

// Follow keeps state derived from the cache current until ctx ends. It calls sync
// with every item the cache holds, then changes with the events that came after,
// each call taking whatever events are queued by then (so a burst costs one call).
// A follower that falls more than buf events behind loses its stream; Follow then
// subscribes again and calls sync with a fresh snapshot, so the derived state is
// rebuilt rather than left missing a change.
//
// It returns nil when ctx ends, or the first error sync or changes returns.
func (c *Cache[T]) Follow(ctx context.Context, buf int, sync func(snapshot []Item[T]) error, changes func(batch []Event[T]) error) error {
	for ctx.Err() == nil {
		err := c.follow(ctx, buf, sync, changes)
		if err != nil {
			return err
		}
	}
	return nil
}

// follow is one subscription: it returns nil when ctx ends or the stream is lost.
func (c *Cache[T]) follow(ctx context.Context, buf int, sync func([]Item[T]) error, changes func([]Event[T]) error) error {
	snap, events, cancel := c.Subscribe(buf)
	defer cancel()
	if err := sync(snap); err != nil {
		return err
	}
	batch := make([]Event[T], 0, 64)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			batch = append(batch[:0], ev)
		more:
			for len(batch) < buf {
				select {
				case ev, ok := <-events:
					if !ok {
						break more
					}
					batch = append(batch, ev)
				default:
					break more
				}
			}
			if err := changes(batch); err != nil {
				return err
			}
		}
	}
}
