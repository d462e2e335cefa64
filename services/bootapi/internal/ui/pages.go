package ui

import (
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
)

// common is what every page's layout shows.
type common struct {
	Title string
	// Nav is the page's tab (boots, jobs, machines).
	Nav string
	// Who is the signed-in identity.
	Who string
}

type loginData struct {
	common
	Error, Next string
}

// listData is a list page: counts by site and state, the filter, one page.
type listData[T any] struct {
	common
	Sites  []siteCount
	States []string
	Filter filter
	Page   page[T]
	// Prev and Next are the neighbouring pages' queries ("" at either end).
	Prev, Next string
}

func newList[T any](c common, sites []siteCount, states []string, f filter, p page[T]) listData[T] {
	d := listData[T]{common: c, Sites: sites, States: states, Filter: f, Page: p}
	if p.Page > 0 {
		d.Prev = f.URL(p.Page - 1)
	}
	if p.Page+1 < p.Pages {
		d.Next = f.URL(p.Page + 1)
	}
	return d
}

// visibleSites are the counts of the sites id may see.
func visibleSites(all []siteCount, id auth.Identity) []siteCount {
	if len(id.Sites) == 0 {
		return all
	}
	out := make([]siteCount, 0, len(id.Sites))
	for _, sc := range all {
		if id.MaySite(sc.Site) {
			out = append(out, sc)
		}
	}
	return out
}

var sessionStates = []string{"failed", "stalled", "active", "succeeded"}

func sessionState(s bootapiv1.SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}

func (u *UI) bootsData(id auth.Identity, f filter) listData[*bootapiv1.BootSession] {
	snap := u.sessSnap.Load()
	var keep func(*bootapiv1.BootSession) bool
	if f.Site != "" || f.State != "" || f.Q != "" || len(id.Sites) > 0 {
		keep = func(s *bootapiv1.BootSession) bool {
			return id.MaySite(s.GetSite()) && (f.Site == "" || s.GetSite() == f.Site) &&
				(f.State == "" || sessionState(s.GetState()) == f.State) &&
				(f.Q == "" || contains(f.Q, s.GetMac(), s.GetIp(), s.GetJobId(), s.GetFailedHop(), s.GetMessage(), u.hostname(s.GetMac())))
		}
	}
	return newList(u.common("Boots", "boots", id), visibleSites(snap.sites, id), sessionStates, f, paginate(snap.rows, keep, f.Page, f.N))
}

var jobStates = []string{"pending", "dispatched", "running", "succeeded", "failed", "canceled", "expired"}

func jobState(s bootapiv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

// jobRow is a job with its machine's site.
type jobRow struct {
	*bootapiv1.Job
	Site string
}

func (u *UI) jobsData(id auth.Identity, f filter) listData[jobRow] {
	snap := u.jobSnap.Load()
	var keep func(*bootapiv1.Job) bool
	if f.Site != "" || f.State != "" || f.Q != "" || len(id.Sites) > 0 {
		keep = func(j *bootapiv1.Job) bool {
			if f.State != "" && jobState(j.GetState()) != f.State {
				return false
			}
			if f.Q != "" && !contains(f.Q, j.GetId(), j.GetMac(), j.GetProfile(), j.GetMessage()) {
				return false
			}
			site := u.siteOf(j.GetMac())
			return id.MaySite(site) && (f.Site == "" || site == f.Site)
		}
	}
	p := paginate(snap.rows, keep, f.Page, f.N)
	rows := make([]jobRow, len(p.Rows))
	for i, j := range p.Rows {
		rows[i] = jobRow{Job: j, Site: u.siteOf(j.GetMac())}
	}
	return newList(u.common("Jobs", "jobs", id), visibleSites(snap.sites, id), jobStates,
		f, page[jobRow]{Rows: rows, Total: p.Total, Page: p.Page, Pages: p.Pages})
}

// machineRow is a machine with its latest session and that session's job.
type machineRow struct {
	*bootapiv1.Machine
	// Site is the machine's site, the default one when it names none.
	Site    string
	Session *bootapiv1.BootSession
	Job     *bootapiv1.Job
}

// Labels are the machine's labels as k=v, sorted.
func (m machineRow) Labels() []string { return sortedLabels(m.GetLabels()) }

func (u *UI) machinesData(id auth.Identity, f filter) listData[machineRow] {
	snap := u.machSnap.Load()
	var keep func(*bootapiv1.Machine) bool
	if f.Site != "" || f.State != "" || f.Q != "" || len(id.Sites) > 0 {
		keep = func(m *bootapiv1.Machine) bool {
			if site := u.machineSite(m); !id.MaySite(site) || (f.Site != "" && site != f.Site) {
				return false
			}
			if f.State == "discovered" && !m.GetDiscovered() || f.State == "registered" && m.GetDiscovered() {
				return false
			}
			if f.Q == "" || contains(f.Q, m.GetMac(), m.GetHostname(), m.GetIpv4Address()) {
				return true
			}
			for k, v := range m.GetLabels() {
				if contains(f.Q, k+"="+v) {
					return true
				}
			}
			return false
		}
	}
	p := paginate(snap.rows, keep, f.Page, f.N)
	rows := make([]machineRow, len(p.Rows))
	for i, m := range p.Rows {
		rows[i] = machineRow{Machine: m, Site: u.machineSite(m)}
		if it, ok := u.cfg.Sessions.Get(m.GetMac()); ok {
			rows[i].Session = it.Value
			if j, ok := u.cfg.Jobs.Get(it.Value.GetJobId()); ok && it.Value.GetJobId() != "" {
				rows[i].Job = j.Value
			}
		}
	}
	return newList(u.common("Machines", "machines", id), visibleSites(snap.sites, id), []string{"registered", "discovered"},
		f, page[machineRow]{Rows: rows, Total: p.Total, Page: p.Page, Pages: p.Pages})
}

func (u *UI) common(title, nav string, id auth.Identity) common {
	return common{Title: title, Nav: nav, Who: id.String()}
}

// bootData is one session's page.
type bootData struct {
	common
	MAC      string
	Session  *bootapiv1.BootSession
	Machine  *bootapiv1.Machine
	Job      *bootapiv1.Job
	Hops     []hopRow
	TraceURL string
	// Span is the time the waterfall covers.
	Span time.Duration
}

// hopRow is one hop of the waterfall; X and W place its bar on a 0-1000 scale.
type hopRow struct {
	*bootapiv1.Hop
	Offset time.Duration
	X, W   float64
}

func (u *UI) bootData(ctx context.Context, id auth.Identity, raw string) (bootData, bool) {
	d := bootData{common: u.common("Boot", "boots", id), MAC: raw}
	mac, err := macaddr.Normalize(raw)
	if err != nil {
		return d, false
	}
	d.MAC, d.Title = mac, "Boot of "+mac
	if it, ok := u.cfg.Machines.Get(mac); ok && id.MaySite(u.machineSite(it.Value)) {
		d.Machine = it.Value
	}
	s, ok := u.cfg.Session(ctx, mac)
	if !ok || !id.MaySite(s.GetSite()) {
		return d, d.Machine != nil
	}
	d.Session = s
	if j, ok := u.cfg.Jobs.Get(s.GetJobId()); ok && s.GetJobId() != "" {
		d.Job = j.Value
	}
	if u.cfg.TraceURL != "" && s.GetTraceId() != "" {
		d.TraceURL = strings.ReplaceAll(u.cfg.TraceURL, "{trace_id}", url.PathEscape(s.GetTraceId()))
	}
	d.Hops, d.Span = waterfall(s)
	return d, true
}

// waterfall places each hop on the session's time line, from the session's
// start (or its first hop, if earlier) to the end of its last hop or repeat.
func waterfall(s *bootapiv1.BootSession) ([]hopRow, time.Duration) {
	hops := s.GetHops()
	if len(hops) == 0 {
		return nil, 0
	}
	t0 := hops[0].GetStartTime().AsTime()
	if st := s.GetStartTime(); st != nil && st.AsTime().Before(t0) {
		t0 = st.AsTime()
	}
	end := t0
	for _, h := range hops {
		e := h.GetStartTime().AsTime().Add(h.GetDuration().AsDuration())
		if h.GetLastRepeatTime() != nil && h.GetLastRepeatTime().AsTime().After(e) {
			e = h.GetLastRepeatTime().AsTime()
		}
		if e.After(end) {
			end = e
		}
	}
	span := max(end.Sub(t0), time.Millisecond)
	rows := make([]hopRow, len(hops))
	for i, h := range hops {
		off := h.GetStartTime().AsTime().Sub(t0)
		d := h.GetDuration().AsDuration()
		if h.GetLastRepeatTime() != nil {
			d = max(d, h.GetLastRepeatTime().AsTime().Sub(h.GetStartTime().AsTime()))
		}
		x := 1000 * float64(off) / float64(span)
		w := max(1000*float64(d)/float64(span), 3)
		rows[i] = hopRow{Hop: h, Offset: off, X: min(max(x, 0), 997), W: min(w, 1000-min(max(x, 0), 997))}
	}
	return rows, span
}
