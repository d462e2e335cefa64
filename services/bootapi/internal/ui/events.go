package ui

import (
	"bufio"
	"context"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// streamLifetime ends an event stream before bootapi's HTTP write timeout
// (30 s) would cut it; the browser's EventSource connects again by itself,
// naming the last event it saw.
const streamLifetime = 20 * time.Second

// events streams server-sent events: "changed", with the snapshots' version as
// its id, whenever sessions, jobs or machines changed (at most once per refresh
// tick). A page fetches its live part again on each. A browser that comes back
// with an older Last-Event-ID is told at once.
func (u *UI) events(base context.Context, rc *fasthttp.RequestCtx) {
	rc.SetContentType("text/event-stream")
	rc.Response.Header.Set("X-Accel-Buffering", "no")
	last, seen := uint64(0), false
	if id := rc.Request.Header.Peek("Last-Event-ID"); len(id) > 0 {
		if v, err := strconv.ParseUint(string(id), 10, 64); err == nil {
			last, seen = v, true
		}
	}
	rc.SetBodyStreamWriter(func(w *bufio.Writer) {
		u.streams.Add(1)
		defer u.streams.Add(-1)
		// An open stream is someone looking: the views follow from now on.
		ctx, cancel := context.WithTimeout(base, freshWait)
		u.fresh(ctx)
		cancel()
		ver, changed := u.Version()
		w.WriteString("retry: 2000\n\n")
		if seen && last != ver {
			writeChanged(w, ver)
		}
		if w.Flush() != nil {
			return
		}
		end := time.NewTimer(streamLifetime)
		defer end.Stop()
		for {
			select {
			case <-changed:
				ver, changed = u.Version()
				writeChanged(w, ver)
				if w.Flush() != nil {
					return
				}
			case <-end.C:
				return
			case <-u.done:
				return
			case <-base.Done():
				return
			}
		}
	})
}

func writeChanged(w *bufio.Writer, ver uint64) {
	w.WriteString("id: ")
	w.WriteString(strconv.FormatUint(ver, 10))
	w.WriteString("\nevent: changed\ndata: ")
	w.WriteString(strconv.FormatUint(ver, 10))
	w.WriteString("\n\n")
}
