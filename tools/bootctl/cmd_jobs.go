package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
)

func jobClient(g *Global) (bootapiv1.JobServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewJobServiceClient(cc), nil
}

func jobsCommand(g *Global) *cobra.Command {
	return group(&cobra.Command{
		Use:     "jobs",
		Aliases: []string{"job"},
		Short:   "Create, list, show, cancel and watch one-shot boot jobs",
		Long: `A job boots a machine into a profile once (a reinstall): it is pending until the
machine's next boot, dispatched when the machine fetches its script, running
while the installer reports progress, and ends succeeded, failed, canceled or
expired. A machine has at most one unfinished job.`,
	},
		jobsListCommand(g),
		jobsGetCommand(g),
		jobsCreateCommand(g),
		jobsCancelCommand(g),
		jobsWatchCommand(g),
	)
}

func jobStateName(s bootapiv1.JobState) string { return enumName(s.String(), "JOB_STATE_") }

var jobStateWords = enumWords("JOB_STATE_", bootapiv1.JobState_value)

// jobFinal reports whether a job has reached a state it never leaves.
func jobFinal(j *bootapiv1.Job) bool {
	switch j.GetState() {
	case bootapiv1.JobState_JOB_STATE_SUCCEEDED, bootapiv1.JobState_JOB_STATE_FAILED,
		bootapiv1.JobState_JOB_STATE_CANCELED, bootapiv1.JobState_JOB_STATE_EXPIRED:
		return true
	}
	return false
}

// jobProgress is the progress to show. bootapi stores the last report's
// progress, and a final report usually has none, so a job that went running
// 100% -> succeeded would show 0%: show the last progress reported instead.
func jobProgress(j *bootapiv1.Job) int32 {
	if j.GetProgress() != 0 || !jobFinal(j) {
		return j.GetProgress()
	}
	reports := j.GetReports()
	for i := len(reports) - 1; i >= 0; i-- {
		if p := reports[i].GetProgress(); p != 0 {
			return p
		}
	}
	return 0
}

var jobHeader = []string{"ID", "MAC", "PROFILE", "STATE", "PROGRESS", "CREATED", "UPDATED", "MESSAGE"}

func jobRow(j *bootapiv1.Job) []string {
	return []string{j.GetId(), j.GetMac(), j.GetProfile(), jobStateName(j.GetState()), fmt.Sprintf("%d%%", jobProgress(j)), ts(j.GetCreateTime()), ts(j.GetUpdateTime()), dash(j.GetMessage())}
}

func showJob(g *Global, j *bootapiv1.Job) error {
	return g.show(j, func(w io.Writer) error {
		fields := []field{
			{"ID", j.GetId()},
			{"MAC", j.GetMac()},
			{"Profile", j.GetProfile()},
			{"State", jobStateName(j.GetState())},
			{"Progress", fmt.Sprintf("%d%%", jobProgress(j))},
			{"Message", dash(j.GetMessage())},
			{"Timeout", j.GetTimeout().AsDuration().String()},
			{"Created", ts(j.GetCreateTime())},
			{"Dispatched", ts(j.GetDispatchTime())},
			{"Deadline", ts(j.GetDeadlineTime())},
			{"Updated", ts(j.GetUpdateTime())},
			{"Finished", ts(j.GetFinishTime())},
		}
		if err := writeDetail(w, fields); err != nil {
			return err
		}
		if len(j.GetReports()) == 0 {
			return nil
		}
		fmt.Fprintln(w, "\nReports:")
		rows := make([][]string, 0, len(j.GetReports()))
		for _, r := range j.GetReports() {
			// A final report without a progress says nothing about it.
			progress := fmt.Sprintf("%d%%", r.GetProgress())
			if r.GetProgress() == 0 && r.GetState() != bootapiv1.JobState_JOB_STATE_RUNNING {
				progress = "-"
			}
			rows = append(rows, []string{ts(r.GetTime()), jobStateName(r.GetState()), progress, dash(r.GetMessage())})
		}
		return writeTable(w, []string{"TIME", "STATE", "PROGRESS", "MESSAGE"}, rows)
	})
}

func jobsListCommand(g *Global) *cobra.Command {
	var mac string
	var states []string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List jobs, newest last",
		Example: `  bootctl jobs list
  bootctl jobs list --state pending,running
  bootctl jobs list --mac 52:54:00:12:34:56 -o json`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &bootapiv1.ListJobsRequest{Mac: mac}
			for _, s := range states {
				v, err := parseEnum("state", strings.TrimSpace(s), "JOB_STATE_", bootapiv1.JobState_value)
				if err != nil {
					return err
				}
				req.States = append(req.States, bootapiv1.JobState(v))
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.ListJobs(ctx, req)
			if err != nil {
				return err
			}
			return g.show(r, func(w io.Writer) error {
				rows := make([][]string, 0, len(r.GetJobs()))
				for _, j := range r.GetJobs() {
					rows = append(rows, jobRow(j))
				}
				return writeTable(w, jobHeader, rows)
			})
		},
	}
	cmd.Flags().StringVar(&mac, "mac", "", "only this machine's jobs")
	cmd.Flags().StringSliceVar(&states, "state", nil, "only jobs in these states: "+strings.Join(jobStateWords, ", "))
	_ = cmd.RegisterFlagCompletionFunc("mac", complete(g, machineMACs))
	_ = cmd.RegisterFlagCompletionFunc("state", words(jobStateWords...))
	return withFields(cmd, map[string]string{"mac": "--mac", "states": "--state"})
}

func jobsGetCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "get ID",
		Aliases:           []string{"show"},
		Short:             "Show one job and the reports it received",
		Example:           `  bootctl jobs get 19ad2c0f3e1a4be29c01d7`,
		Args:              argNames("ID"),
		ValidArgsFunction: firstArg(g, jobIDs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.GetJob(ctx, &bootapiv1.GetJobRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return showJob(g, r.GetJob())
		},
	}
	return withFields(cmd, map[string]string{"id": "ID"})
}

func jobsCreateCommand(g *Global) *cobra.Command {
	var mac, profile string
	var timeout, release time.Duration
	cmd := &cobra.Command{
		Use:   "create --mac MAC --profile PROFILE",
		Short: "Queue a job: boot a machine into a profile once",
		Example: `  bootctl jobs create --mac 52:54:00:12:34:56 --profile debian-12
  bootctl jobs create --mac 52:54:00:12:34:56 --profile debian-12 --job-timeout 30m
  bootctl jobs create --mac 52:54:00:12:34:57 --profile debian-12 --release-after 10m   # a second wave`,
		Args: argNames(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mac == "" || profile == "" {
				return usageErrorf("%s: --mac and --profile are required", cmd.CommandPath())
			}
			req := &bootapiv1.CreateJobRequest{Mac: mac, Profile: profile}
			if timeout > 0 {
				req.Timeout = durationpb.New(timeout)
			}
			if release > 0 {
				req.ReleaseAfter = durationpb.New(release)
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.CreateJob(ctx, req)
			if err != nil {
				return err
			}
			return showJob(g, r.GetJob())
		},
	}
	cmd.Flags().StringVar(&mac, "mac", "", "machine to boot (required)")
	cmd.Flags().StringVar(&profile, "profile", "", "profile to boot once (required)")
	cmd.Flags().DurationVar(&timeout, "job-timeout", 0, "time from dispatch to a final report (default 1h)")
	cmd.Flags().DurationVar(&release, "release-after", 0, "hold the job this long (a wave): until then the machine waits and asks again")
	_ = cmd.RegisterFlagCompletionFunc("mac", complete(g, machineMACs))
	_ = cmd.RegisterFlagCompletionFunc("profile", complete(g, profileNames))
	return withFields(cmd, map[string]string{"mac": "--mac", "profile": "--profile", "timeout": "--job-timeout", "release_after": "--release-after"})
}

func jobsCancelCommand(g *Global) *cobra.Command {
	cmd := &cobra.Command{
		Use:               "cancel ID",
		Short:             "Cancel an unfinished job",
		Example:           `  bootctl jobs cancel 19ad2c0f3e1a4be29c01d7`,
		Args:              argNames("ID"),
		ValidArgsFunction: firstArg(g, jobIDs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.call(cmd.Context())
			defer cancel()
			r, err := c.CancelJob(ctx, &bootapiv1.CancelJobRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return showJob(g, r.GetJob())
		},
	}
	return withFields(cmd, map[string]string{"id": "ID"})
}
