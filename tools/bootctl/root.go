package main

import (
	"github.com/spf13/cobra"
)

// newRootCommand builds the command tree. The list of commands is written out
// here, in one place, so that reading it tells every command bootctl has.
func newRootCommand(g *Global) *cobra.Command {
	root := &cobra.Command{
		Use:   "bootctl",
		Short: "Operate bootchain: machines, profiles, jobs, sites, artifacts, leases",
		Long: `bootctl is the operator CLI of bootchain. It talks gRPC to bootapi (machines,
profiles, jobs, sites, sessions), artifactstore (artifacts), dhcpd (leases, pools)
and tftpd (cache, stats).

Global flags may come anywhere on the line and may also be set as
BOOTCHAIN_<FLAG> variables (BOOTCHAIN_BOOTAPI_ADDR, BOOTCHAIN_OUTPUT, ...);
flags win over variables.`,
		Example: `  bootctl machines list -l rack=r12
  bootctl profiles create debian-12 --kernel debian/linux --initrd debian/initrd.gz
  bootctl jobs create --mac 52:54:00:12:34:56 --profile debian-12
  bootctl jobs watch --mac 52:54:00:12:34:56
  bootctl -o json jobs list
  source <(bootctl completion bash)`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.resolve(cmd)
		},
	}
	g.addFlags(root.PersistentFlags())
	// A persistent -h is known before the command is found, so "bootctl -h
	// jobs" and "bootctl jobs -h list" show the help of jobs and jobs list
	// rather than read "jobs" as the value of -h.
	root.PersistentFlags().BoolP("help", "h", false, "help for the command")
	root.SetGlobalNormalizationFunc(normalizeFlag)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{msg: cmd.CommandPath() + ": " + err.Error()}
	})
	registerGlobalCompletions(root)
	group(root,
		machinesCommand(g),
		profilesCommand(g),
		jobsCommand(g),
		sitesCommand(g),
		sessionsCommand(g),
		traceCommand(g),
		diagnoseCommand(g),
		artifactsCommand(g),
		leasesCommand(g),
		poolsCommand(g),
		tftpCommand(g),
		auditCommand(g),
		tokensCommand(g),
		applyCommand(g),
		exportCommand(g),
	)
	return root
}
