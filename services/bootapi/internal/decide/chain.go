package decide

import (
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// The rules' names, as Decision.Rule reports them.
const (
	RuleDiscoveryRejected = "discovery-rejected"
	RuleMenuChoice        = "menu-choice"
	RulePendingJob        = "pending-job"
	RuleMachineDefault    = "machine-default"
	RuleSiteDefault       = "site-default"
	RuleFallbackDefault   = "fallback-default"
)

// A Rule answers a request it matches; Match reports false to pass it on.
type Rule struct {
	Name  string
	Match func(in Input, f Facts) (Decision, bool)
}

// Facts are what every rule needs, resolved once per evaluation.
type Facts struct {
	// Machine is the record, or a bare one with the MAC when unknown.
	Machine *bootapiv1.Machine
	Known   bool
	Site    *bootapiv1.Site
}

// Chain is an ordered list of rules: the first match wins. The last rule
// should match everything; Evaluate answers a Failure if none does.
type Chain []Rule

// DefaultChain is bootapi's decision, in order:
//
//	discovery-rejected  an unknown machine whose site's policy rejects it: local disk
//	menu-choice         a profile picked in the menu, if offered to this machine
//	pending-job         the machine's pending job, for a trusted request: its profile, with a callback
//	machine-default     the machine's default action (and profile)
//	site-default        its site's default action (and profile)
//	fallback-default    bootapi's default action (-default-action), else the menu
var DefaultChain = Chain{
	{RuleDiscoveryRejected, discoveryRejected},
	{RuleMenuChoice, menuChoice},
	{RulePendingJob, pendingJob},
	{RuleMachineDefault, machineDefault},
	{RuleSiteDefault, siteDefault},
	{RuleFallbackDefault, fallbackDefault},
}

// SiteOf is the site a request's machine belongs to, as Evaluate resolves it:
// the machine's site or the default, its record or a bare one of that name.
// Whoever builds an Input reads it to know which trust rule applies.
func SiteOf(in Input) *bootapiv1.Site {
	name := in.Machine.GetSite()
	if name == "" {
		name = in.DefaultSite
	}
	if in.Sites != nil {
		if s, ok := in.Sites(name); ok {
			return s
		}
	}
	return &bootapiv1.Site{Name: name}
}

// Authoritative reports whether bootchain's dhcpd hands out the site's
// addresses (its leases say which address a MAC holds). A site without DHCP
// settings counts as authoritative: unknown is not trusted.
func Authoritative(s *bootapiv1.Site) bool {
	return s.GetDhcp().GetMode() != bootapiv1.DhcpMode_DHCP_MODE_PROXY
}

// NeedsTrust reports whether the decision for in depends on Input.Trusted, so
// that whoever builds the input checks the requester only then: a pending job
// that a menu choice does not override, or an unknown MAC that the site would
// record where its dhcpd is authoritative.
func NeedsTrust(in Input) bool {
	if in.MenuChoice == "" && in.Job.GetState() == bootapiv1.JobState_JOB_STATE_PENDING {
		return true
	}
	if in.Machine != nil {
		return false
	}
	s := SiteOf(in)
	return discovers(s) && Authoritative(s)
}

// Evaluate resolves the machine and its site and returns the first match.
func (c Chain) Evaluate(in Input) Decision {
	f := Facts{Machine: in.Machine, Known: in.Machine != nil}
	if !f.Known {
		f.Machine = &bootapiv1.Machine{Mac: in.MAC}
	}
	f.Site = SiteOf(in)
	for _, r := range c {
		if d, ok := r.Match(in, f); ok {
			d.Rule, d.Site, d.Machine = r.Name, f.Site, f.Machine
			d.Discover = !f.Known && discovers(f.Site) && (in.Trusted || !Authoritative(f.Site))
			if d.Job == nil && in.MenuChoice == "" && !in.Trusted && in.Job.GetState() == bootapiv1.JobState_JOB_STATE_PENDING {
				d.Withheld = "job " + in.Job.GetId() + " not dispatched: " + in.Untrusted
			}
			return d
		}
	}
	return Decision{Rule: "none", Action: Failure, Site: f.Site, Machine: f.Machine,
		Message: "no rule decides what this machine boots", Detail: "no rule matched", Final: true}
}

func discovers(s *bootapiv1.Site) bool {
	switch s.GetDiscoveryPolicy() {
	case bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_REJECT, bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_IGNORE:
		return false
	}
	return true
}

func lookup(in Input, name string) (*bootapiv1.Profile, bool) {
	if in.Profiles == nil || name == "" {
		return nil, false
	}
	return in.Profiles(name)
}

func discoveryRejected(_ Input, f Facts) (Decision, bool) {
	if f.Known || f.Site.GetDiscoveryPolicy() != bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_REJECT {
		return Decision{}, false
	}
	return Decision{Action: LocalDisk, Detail: "unknown machine rejected by site policy", Final: true}, true
}

// menuChoice boots a profile picked in the menu: one the menu offers, or the
// machine's or its site's default profile. Anything else is refused, so that
// the profile parameter does not open every profile to every machine.
func menuChoice(in Input, f Facts) (Decision, bool) {
	name := in.MenuChoice
	if name == "" {
		return Decision{}, false
	}
	p, ok := lookup(in, name)
	if !ok || !(p.GetMenu() || name == f.Machine.GetDefaultProfile() || name == f.Site.GetDefaultProfile()) {
		return Decision{Action: Failure, Message: "profile " + name + " is not offered to this machine",
			Detail: "menu choice refused: " + name, Final: true}, true
	}
	return Decision{Action: Boot, Profile: p, Detail: "menu choice " + name}, true
}

// pendingJob dispatches the machine's pending job, only to a trusted request:
// anyone else (another host asking for the machine's script) gets the
// machine's default and no callback token.
func pendingJob(in Input, _ Facts) (Decision, bool) {
	j := in.Job
	if j == nil || j.GetState() != bootapiv1.JobState_JOB_STATE_PENDING || !in.Trusted {
		return Decision{}, false
	}
	p, _ := lookup(in, j.GetProfile())
	return Decision{Action: Boot, Job: j, Profile: p, Detail: "job " + j.GetId() + " profile " + j.GetProfile()}, true
}

func machineDefault(in Input, f Facts) (Decision, bool) {
	return byAction(in, f.Machine.GetDefaultAction(), f.Machine.GetDefaultProfile())
}

func siteDefault(in Input, f Facts) (Decision, bool) {
	return byAction(in, f.Site.GetDefaultAction(), f.Site.GetDefaultProfile())
}

func fallbackDefault(in Input, _ Facts) (Decision, bool) {
	if d, ok := byAction(in, in.DefaultAction, ""); ok {
		return d, true
	}
	return Decision{Action: Menu, Final: true}, true // no default action configured
}

// byAction is a default: an action and, for ACTION_PROFILE, its profile.
// ACTION_UNSPECIFIED passes to the next rule.
func byAction(in Input, a bootapiv1.Action, profile string) (Decision, bool) {
	switch a {
	case bootapiv1.Action_ACTION_LOCAL_DISK:
		return Decision{Action: LocalDisk, Detail: "default: local disk", Final: true}, true
	case bootapiv1.Action_ACTION_SANBOOT:
		return Decision{Action: Sanboot, Detail: "default: sanboot first disk", Final: true}, true
	case bootapiv1.Action_ACTION_SHELL:
		return Decision{Action: Shell, Detail: "default: iPXE shell", Final: true}, true
	case bootapiv1.Action_ACTION_MENU:
		return Decision{Action: Menu, Final: true}, true
	case bootapiv1.Action_ACTION_PROFILE:
		p, ok := lookup(in, profile)
		if !ok {
			return Decision{Action: Failure, Message: "default profile " + profile + " does not exist",
				Detail: "default profile missing: " + profile, Final: true}, true
		}
		return Decision{Action: Boot, Profile: p, Detail: "default profile " + profile}, true
	case bootapiv1.Action_ACTION_UNSPECIFIED:
		return Decision{}, false
	}
	// A value this build does not know: the menu lets someone choose.
	return Decision{Action: Menu, Final: true}, true
}
