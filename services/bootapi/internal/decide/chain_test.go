package decide_test

import (
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/google/go-cmp/cmp"
)

// outcome is what a test compares of a Decision.
type outcome struct {
	Rule, Action, Site, Profile, Job, Message, Detail, Withheld string
	Discover, Final                                             bool
}

func outcomeOf(d decide.Decision) outcome {
	return outcome{
		Rule: d.Rule, Action: d.Action.String(), Site: d.Site.GetName(), Profile: d.Profile.GetName(), Job: d.Job.GetId(),
		Message: d.Message, Detail: d.Detail, Withheld: d.Withheld, Discover: d.Discover, Final: d.Final,
	}
}

const mac = "52:54:00:12:34:56"

var (
	profiles = map[string]*bootapiv1.Profile{
		"debian":  {Name: "debian", Menu: true},
		"rescue":  {Name: "rescue"}, // not in the menu
		"install": {Name: "install"},
	}
	sites = map[string]*bootapiv1.Site{
		"default": {Name: "default"},
		"lab":     {Name: "lab", DefaultAction: bootapiv1.Action_ACTION_PROFILE, DefaultProfile: "rescue"},
		"closed":  {Name: "closed", DiscoveryPolicy: bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_REJECT},
		"quiet":   {Name: "quiet", DiscoveryPolicy: bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_IGNORE},
		"shell":   {Name: "shell", DefaultAction: bootapiv1.Action_ACTION_SHELL},
		"proxy":   {Name: "proxy", Dhcp: &bootapiv1.SiteDhcp{Mode: bootapiv1.DhcpMode_DHCP_MODE_PROXY}},
	}
	pending = &bootapiv1.Job{Id: "j1", Mac: mac, Profile: "install", State: bootapiv1.JobState_JOB_STATE_PENDING}
)

func machine(mut func(m *bootapiv1.Machine)) *bootapiv1.Machine {
	m := &bootapiv1.Machine{Mac: mac, Hostname: "node1"}
	if mut != nil {
		mut(m)
	}
	return m
}

func TestChain(t *testing.T) {
	for name, tc := range map[string]struct {
		in   decide.Input
		want outcome
	}{
		"unknown machine, default site: menu, discovered": {
			decide.Input{},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "default", Discover: true, Final: true},
		},
		"unknown machine, site rejects discovery": {
			decide.Input{DefaultSite: "closed"},
			outcome{Rule: decide.RuleDiscoveryRejected, Action: "local-disk", Site: "closed", Detail: "unknown machine rejected by site policy", Final: true},
		},
		"unknown machine, site ignores discovery: menu, not recorded": {
			decide.Input{DefaultSite: "quiet"},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "quiet", Final: true},
		},
		"registered machine in a rejecting site boots normally": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.Site = "closed" })},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "closed", Final: true},
		},
		"menu choice of a menu profile": {
			decide.Input{Machine: machine(nil), MenuChoice: "debian"},
			outcome{Rule: decide.RuleMenuChoice, Action: "boot", Site: "default", Profile: "debian", Detail: "menu choice debian"},
		},
		"menu choice wins over a pending job": {
			decide.Input{Machine: machine(nil), MenuChoice: "debian", Job: pending},
			outcome{Rule: decide.RuleMenuChoice, Action: "boot", Site: "default", Profile: "debian", Detail: "menu choice debian"},
		},
		"menu choice of a profile not offered": {
			decide.Input{Machine: machine(nil), MenuChoice: "rescue"},
			outcome{Rule: decide.RuleMenuChoice, Action: "failure", Site: "default", Message: "profile rescue is not offered to this machine", Detail: "menu choice refused: rescue", Final: true},
		},
		"menu choice of the machine's default profile": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.DefaultProfile = "rescue" }), MenuChoice: "rescue"},
			outcome{Rule: decide.RuleMenuChoice, Action: "boot", Site: "default", Profile: "rescue", Detail: "menu choice rescue"},
		},
		"menu choice of the site's default profile": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.Site = "lab" }), MenuChoice: "rescue"},
			outcome{Rule: decide.RuleMenuChoice, Action: "boot", Site: "lab", Profile: "rescue", Detail: "menu choice rescue"},
		},
		"menu choice of a missing profile": {
			decide.Input{Machine: machine(nil), MenuChoice: "gone"},
			outcome{Rule: decide.RuleMenuChoice, Action: "failure", Site: "default", Message: "profile gone is not offered to this machine", Detail: "menu choice refused: gone", Final: true},
		},
		"pending job wins over the machine's default": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.DefaultAction = bootapiv1.Action_ACTION_LOCAL_DISK }), Job: pending},
			outcome{Rule: decide.RulePendingJob, Action: "boot", Site: "default", Profile: "install", Job: "j1", Detail: "job j1 profile install"},
		},
		"pending job whose profile is not known here": {
			decide.Input{Machine: machine(nil), Job: &bootapiv1.Job{Id: "j2", Profile: "elsewhere", State: bootapiv1.JobState_JOB_STATE_PENDING}},
			outcome{Rule: decide.RulePendingJob, Action: "boot", Site: "default", Job: "j2", Detail: "job j2 profile elsewhere"},
		},
		"dispatched job is not dispatched again": {
			decide.Input{Machine: machine(nil), Job: &bootapiv1.Job{Id: "j3", Profile: "install", State: bootapiv1.JobState_JOB_STATE_DISPATCHED}},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "default", Final: true},
		},
		"machine default: local disk": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.DefaultAction = bootapiv1.Action_ACTION_LOCAL_DISK; m.Site = "shell" })},
			outcome{Rule: decide.RuleMachineDefault, Action: "local-disk", Site: "shell", Detail: "default: local disk", Final: true},
		},
		"machine default: sanboot": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.DefaultAction = bootapiv1.Action_ACTION_SANBOOT })},
			outcome{Rule: decide.RuleMachineDefault, Action: "sanboot", Site: "default", Detail: "default: sanboot first disk", Final: true},
		},
		"machine default: profile": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) {
				m.DefaultAction, m.DefaultProfile = bootapiv1.Action_ACTION_PROFILE, "rescue"
			})},
			outcome{Rule: decide.RuleMachineDefault, Action: "boot", Site: "default", Profile: "rescue", Detail: "default profile rescue"},
		},
		"machine default: missing profile": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) {
				m.DefaultAction, m.DefaultProfile = bootapiv1.Action_ACTION_PROFILE, "gone"
			})},
			outcome{Rule: decide.RuleMachineDefault, Action: "failure", Site: "default", Message: "default profile gone does not exist", Detail: "default profile missing: gone", Final: true},
		},
		"machine default: menu, over its site's shell": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.DefaultAction = bootapiv1.Action_ACTION_MENU; m.Site = "shell" })},
			outcome{Rule: decide.RuleMachineDefault, Action: "menu", Site: "shell", Final: true},
		},
		"site default: shell": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.Site = "shell" })},
			outcome{Rule: decide.RuleSiteDefault, Action: "shell", Site: "shell", Detail: "default: iPXE shell", Final: true},
		},
		"site default: profile": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.Site = "lab" })},
			outcome{Rule: decide.RuleSiteDefault, Action: "boot", Site: "lab", Profile: "rescue", Detail: "default profile rescue"},
		},
		"site not stored: bare site of that name": {
			decide.Input{Machine: machine(func(m *bootapiv1.Machine) { m.Site = "nowhere" })},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "nowhere", Final: true},
		},
		"fallback default: bootapi's -default-action": {
			decide.Input{Machine: machine(nil), DefaultAction: bootapiv1.Action_ACTION_LOCAL_DISK},
			outcome{Rule: decide.RuleFallbackDefault, Action: "local-disk", Site: "default", Detail: "default: local disk", Final: true},
		},
	} {
		t.Run(name, func(t *testing.T) {
			in := tc.in
			in.MAC = mac
			in.Trusted = true
			if in.DefaultSite == "" {
				in.DefaultSite = "default"
			}
			in.Sites = func(n string) (*bootapiv1.Site, bool) { s, ok := sites[n]; return s, ok }
			in.Profiles = func(n string) (*bootapiv1.Profile, bool) { p, ok := profiles[n]; return p, ok }
			d := decide.Evaluate(in)
			if diff := cmp.Diff(tc.want, outcomeOf(d)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if d.Machine.GetMac() != mac {
				t.Errorf("decision's machine %q, want %q", d.Machine.GetMac(), mac)
			}
		})
	}
}

// A chain without a rule that matches everything ends in a failure that says so.
func TestChainNoMatch(t *testing.T) {
	c := decide.Chain{decide.DefaultChain[0]}
	d := c.Evaluate(decide.Input{MAC: mac, Machine: machine(nil)})
	if d.Action != decide.Failure || d.Rule != "none" || !d.Final {
		t.Fatalf("got %+v", outcomeOf(d))
	}
}

// NeedsTrust is asked only where the decision reads Trusted.
func TestNeedsTrust(t *testing.T) {
	lookup := func(n string) (*bootapiv1.Site, bool) { s, ok := sites[n]; return s, ok }
	for name, tc := range map[string]struct {
		in   decide.Input
		want bool
	}{
		"pending job":                     {decide.Input{Machine: machine(nil), Job: pending}, true},
		"pending job, menu choice":        {decide.Input{Machine: machine(nil), Job: pending, MenuChoice: "debian"}, false},
		"dispatched job":                  {decide.Input{Machine: machine(nil), Job: &bootapiv1.Job{State: bootapiv1.JobState_JOB_STATE_DISPATCHED}}, false},
		"registered, no job":              {decide.Input{Machine: machine(nil)}, false},
		"unknown, authoritative site":     {decide.Input{DefaultSite: "default"}, true},
		"unknown, proxy site":             {decide.Input{DefaultSite: "proxy"}, false},
		"unknown, site ignores discovery": {decide.Input{DefaultSite: "quiet"}, false},
	} {
		tc.in.Sites = lookup
		if got := decide.NeedsTrust(tc.in); got != tc.want {
			t.Errorf("%s: NeedsTrust = %v, want %v", name, got, tc.want)
		}
	}
}

// Requests not from the machine's address: no dispatch, and no discovery
// where leases say who is who.
func TestChainUntrusted(t *testing.T) {
	for name, tc := range map[string]struct {
		in   decide.Input
		want outcome
	}{
		"pending job withheld from an untrusted request": {
			decide.Input{Machine: machine(nil), Job: pending, Untrusted: "198.18.0.9 does not hold its lease"},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "default", Final: true,
				Withheld: "job j1 not dispatched: 198.18.0.9 does not hold its lease"},
		},
		"menu choice of an untrusted request: nothing withheld": {
			decide.Input{Machine: machine(nil), MenuChoice: "debian", Job: pending},
			outcome{Rule: decide.RuleMenuChoice, Action: "boot", Site: "default", Profile: "debian", Detail: "menu choice debian"},
		},
		"unknown machine, authoritative site, untrusted: not recorded": {
			decide.Input{},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "default", Final: true},
		},
		"unknown machine, proxy site, untrusted: recorded (no leases to check)": {
			decide.Input{DefaultSite: "proxy"},
			outcome{Rule: decide.RuleFallbackDefault, Action: "menu", Site: "proxy", Discover: true, Final: true},
		},
	} {
		t.Run(name, func(t *testing.T) {
			in := tc.in
			in.MAC = mac
			if in.DefaultSite == "" {
				in.DefaultSite = "default"
			}
			in.Sites = func(n string) (*bootapiv1.Site, bool) { s, ok := sites[n]; return s, ok }
			in.Profiles = func(n string) (*bootapiv1.Profile, bool) { p, ok := profiles[n]; return p, ok }
			if diff := cmp.Diff(tc.want, outcomeOf(decide.Evaluate(in))); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}
