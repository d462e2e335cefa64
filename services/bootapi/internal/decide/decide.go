// Package decide is bootapi's boot decision: which rule answers a machine's
// script request, and what it boots. It is pure: the input is a value (the
// machine's record, its site, the menu choice, its pending job, how to look up
// profiles), the output is a Decision naming the rule that matched. Nothing here
// writes etcd, opens a session or renders a script; the HTTP layer executes a
// decision (dispatching a job, recording a discovered machine) and a preview
// renders one without executing it.
//
//	d := decide.Evaluate(decide.Input{MAC: mac, Machine: m, Sites: sites, Profiles: profiles})
//	fmt.Println(d.Rule, d.Action) // "machine-default", local disk
package decide

import (
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// Input is what the decision reads about one request.
type Input struct {
	// MAC is the machine's canonical MAC.
	MAC string
	// Machine is its record; nil when the machine is not registered.
	Machine *bootapiv1.Machine
	// MenuChoice is the profile picked in the menu (the request's profile
	// parameter); empty when the request is not a menu choice.
	MenuChoice string
	// Job is the machine's unfinished job; only a pending one is dispatched.
	Job *bootapiv1.Job
	// DefaultSite is the site of machines that name none.
	DefaultSite string
	// DefaultAction is what a machine boots when neither it nor its site sets an
	// action; ACTION_UNSPECIFIED means the menu.
	DefaultAction bootapiv1.Action
	// Sites and Profiles look records up by name (read-only values).
	Sites    func(name string) (*bootapiv1.Site, bool)
	Profiles func(name string) (*bootapiv1.Profile, bool)
	// Trusted: the requester is the machine, as far as bootapi can tell (its
	// address holds the machine's DHCP lease, or in proxy mode is the address
	// dhcpd saw it use). Only a trusted request gets a pending job dispatched
	// and, where the site's dhcpd is authoritative, an unknown MAC recorded.
	// Whoever builds the input decides; the chain only reads it.
	Trusted bool
	// Untrusted says why the requester is not trusted, for the session's hop.
	Untrusted string
}

// Action is what a decision boots.
type Action int

// The actions, from the most to the least involved.
const (
	// Boot is a kernel boot of Decision.Profile (for a job, Decision.Job's).
	Boot Action = iota + 1
	// LocalDisk leaves iPXE for the next boot device.
	LocalDisk
	// Sanboot boots the first disk from iPXE.
	Sanboot
	// Shell drops to the iPXE shell.
	Shell
	// Menu shows the boot menu.
	Menu
	// Failure tells the console Decision.Message and falls back to the next
	// boot device.
	Failure
)

var actionNames = [...]string{Boot: "boot", LocalDisk: "local-disk", Sanboot: "sanboot", Shell: "shell", Menu: "menu", Failure: "failure"}

func (a Action) String() string {
	if a > 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

// Decision is the first matching rule's answer.
type Decision struct {
	// Rule is the name of the rule that matched (the Rule* constants).
	Rule   string
	Action Action
	// Site is the machine's site as resolved (never nil): its record, or a bare
	// one with its name when the site is not stored.
	Site *bootapiv1.Site
	// Machine is the machine's record, or a bare one with its MAC when unknown.
	Machine *bootapiv1.Machine
	// Profile is what Boot boots.
	Profile *bootapiv1.Profile
	// Job is the pending job a Boot dispatches (rule pending-job). Its Profile is
	// nil when the profile is not among those Input.Profiles knows: whoever
	// dispatches confirms it is gone before failing the job.
	Job *bootapiv1.Job
	// Message is what a Failure tells the console.
	Message string
	// Detail says what was decided, for the session's hop.
	Detail string
	// Discover is set for an unknown machine whose site records discovered
	// machines (where the site's dhcpd is authoritative: only for a trusted
	// request, one from the address that holds the MAC's lease).
	Discover bool
	// Withheld says why the machine's pending job was not dispatched to this
	// request (it is not trusted); empty otherwise.
	Withheld string
	// Final: the boot leaves bootchain here (local disk, shell, the menu shown,
	// a failure); a kernel boot goes on to the installer.
	Final bool
}

// Evaluate runs the default chain.
func Evaluate(in Input) Decision { return DefaultChain.Evaluate(in) }
