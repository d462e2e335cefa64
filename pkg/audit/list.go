package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Query filters the log. Zero fields do not filter.
type Query struct {
	// Since and Until bound the events' times: [Since, Until).
	Since, Until time.Time
	// Identity and Action match events whose field contains them.
	Identity, Action string
	// Resource matches events whose resource is exactly it.
	Resource string
	// Sites, when set, matches only events of these sites (for a caller
	// limited to sites).
	Sites []string
	// PageSize is the most events to return; default 100, at most MaxPageSize.
	PageSize int
	// PageToken continues after the previous page.
	PageToken string
}

// Page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// maxScan bounds the events one List reads from etcd: a filter that matches
	// few of many events returns a short page and a token to go on.
	maxScan = 5000
	chunk   = 500
)

// ErrPageToken is returned for a page token List did not hand out.
var ErrPageToken = errors.New("audit: malformed page token")

// ParsePageToken checks a page token: the key suffix of the last event of the
// previous page, "<20 digits>-<8 hex digits>".
func ParsePageToken(tok string) (string, error) {
	if len(tok) != 29 || tok[20] != '-' {
		return "", ErrPageToken
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case i == 20:
		case i < 20 && c >= '0' && c <= '9':
		case i > 20 && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f'):
		default:
			return "", ErrPageToken
		}
	}
	return Prefix + tok, nil
}

// timeKey is the smallest key of an event at t or later.
func timeKey(t time.Time) string {
	return fmt.Sprintf("%s%020d", Prefix, max(t.UnixNano(), 0))
}

// List returns the events q selects, newest first, and the token of the next
// page ("" when there is none).
func List(ctx context.Context, st *store.Store, q Query) ([]*bootapiv1.AuditEvent, string, error) {
	size := q.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	// Keys sort by time: the time bounds and the token are a key range,
	// read from its end backwards.
	start, end := Prefix, clientv3.GetPrefixRangeEnd(Prefix)
	if !q.Since.IsZero() {
		start = max(start, timeKey(q.Since))
	}
	if !q.Until.IsZero() {
		end = min(end, timeKey(q.Until))
	}
	if q.PageToken != "" {
		k, err := ParsePageToken(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		end = min(end, k)
	}
	var out []*bootapiv1.AuditEvent
	scanned := 0
	for start < end {
		tctx, cancel := st.WithTimeout(ctx)
		resp, err := st.Client().Get(tctx, start, clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(chunk))
		cancel()
		if err != nil {
			return nil, "", fmt.Errorf("audit: list: %w", err)
		}
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			end = key
			scanned++
			ev := &bootapiv1.AuditEvent{}
			if err := proto.Unmarshal(kv.Value, ev); err != nil {
				continue // not an event; nothing else writes here
			}
			ev.Key = key
			if q.matches(ev) {
				out = append(out, ev)
				if len(out) == size {
					return out, next(start, end), nil
				}
			}
			if scanned >= maxScan {
				return out, next(start, end), nil
			}
		}
		if !resp.More {
			break
		}
	}
	return out, "", nil
}

// next is the token that continues below end, "" when nothing can be left.
func next(start, end string) string {
	if end <= start {
		return ""
	}
	return strings.TrimPrefix(end, Prefix)
}

func (q Query) matches(ev *bootapiv1.AuditEvent) bool {
	return (q.Identity == "" || strings.Contains(ev.GetIdentity(), q.Identity)) &&
		(q.Action == "" || strings.Contains(ev.GetAction(), q.Action)) &&
		(q.Resource == "" || ev.GetResource() == q.Resource) &&
		(len(q.Sites) == 0 || slices.Contains(q.Sites, ev.GetSite()))
}
