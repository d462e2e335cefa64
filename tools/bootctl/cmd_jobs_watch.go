package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/spf13/cobra"
)

func jobsWatchCommand(g *Global) *cobra.Command {
	var mac string
	cmd := &cobra.Command{
		Use:   "watch [ID]",
		Short: "Follow a job to its end, or every job as it changes",
		Long: `With a job ID, or --mac for the machine's latest job, watch prints the job each
time it changes and exits when the job reaches a final state: with status 0 when
it succeeded, 1 when it failed, was canceled or expired.

Without either, watch follows every job of the fleet, one line per change, until
interrupted (Ctrl-C).`,
		Example: `  bootctl jobs watch 19ad2c0f3e1a4be29c01d7
  bootctl jobs create --mac 52:54:00:12:34:56 --profile debian-12 && bootctl jobs watch --mac 52:54:00:12:34:56
  bootctl jobs watch`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("%s: want at most one job ID", cmd.CommandPath())
			}
			if len(args) == 1 && mac != "" {
				return usageErrorf("%s: give a job ID or --mac, not both", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: firstArg(g, jobIDs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			w := &jobWatcher{g: g, last: map[string]int32{}}
			switch {
			case len(args) == 1:
				w.id = args[0]
			case mac != "":
				if w.id, err = latestJob(cmd.Context(), g, c, mac); err != nil {
					return err
				}
			default:
				fmt.Fprintln(cmd.ErrOrStderr(), "watching every job; Ctrl-C to stop")
			}
			return w.watch(cmd.Context(), c)
		},
	}
	cmd.Flags().StringVar(&mac, "mac", "", "follow this machine's latest job")
	_ = cmd.RegisterFlagCompletionFunc("mac", complete(g, machineMACs))
	return withFields(cmd, map[string]string{"mac": "--mac", "id": "ID"})
}

// errNoJob: jobs watch --mac found no job of the machine.
var errNoJob = errors.New("no job")

// latestJob returns the ID of mac's newest job.
func latestJob(ctx context.Context, g *Global, c bootapiv1.JobServiceClient, mac string) (string, error) {
	ctx, cancel := g.call(ctx)
	defer cancel()
	r, err := c.ListJobs(ctx, &bootapiv1.ListJobsRequest{Mac: mac})
	if err != nil {
		return "", err
	}
	var latest *bootapiv1.Job
	for _, j := range r.GetJobs() {
		// IDs start with their creation time in hex: the greatest is the newest.
		if latest == nil || j.GetId() > latest.GetId() {
			latest = j
		}
	}
	if latest == nil {
		return "", fmt.Errorf("%w for machine %s (create one: bootctl jobs create --mac %s --profile P)", errNoJob, mac, mac)
	}
	return latest.GetId(), nil
}

// jobWatcher prints the events of a job watch.
type jobWatcher struct {
	g  *Global
	id string // the one job followed, or "" for all
	// last is the last non-zero progress seen per job: bootapi may report a
	// job's success with progress 0.
	last   map[string]int32
	header bool
}

func (w *jobWatcher) watch(ctx context.Context, c bootapiv1.JobServiceClient) error {
	stream, err := c.WatchJobs(ctx, &bootapiv1.WatchJobsRequest{Id: w.id})
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("bootapi ended the watch")
		}
		if err != nil {
			return err
		}
		j := ev.GetJob()
		if err := w.print(ev); err != nil {
			return err
		}
		if w.id == "" || j.GetId() != w.id {
			continue
		}
		if ev.GetDeleted() {
			return fmt.Errorf("job %s was deleted", w.id)
		}
		if jobFinal(j) {
			if j.GetState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
				return fmt.Errorf("job %s %s: %s", j.GetId(), jobStateName(j.GetState()), dash(j.GetMessage()))
			}
			return nil
		}
	}
}

const watchFormat = "%-8s  %-21s  %-17s  %-16s  %-10s  %8s  %s\n"

func (w *jobWatcher) print(ev *bootapiv1.WatchJobsResponse) error {
	j := ev.GetJob()
	p := jobProgress(j)
	if p == 0 && jobFinal(j) {
		p = w.last[j.GetId()]
	}
	if p != 0 {
		w.last[j.GetId()] = p
	}
	switch w.g.Output {
	case "yaml":
		fmt.Fprintln(w.g.Out, "---")
		return w.g.show(ev, nil)
	case "json":
		return w.g.show(ev, nil)
	}
	if !w.header {
		w.header = true
		fmt.Fprintf(w.g.Out, watchFormat, "TIME", "ID", "MAC", "PROFILE", "STATE", "PROGRESS", "MESSAGE")
	}
	state := jobStateName(j.GetState())
	if ev.GetDeleted() {
		state = "deleted"
	}
	t := "-"
	if u := j.GetUpdateTime(); u != nil {
		t = u.AsTime().Local().Format("15:04:05")
	}
	_, err := fmt.Fprintf(w.g.Out, watchFormat, t, j.GetId(), j.GetMac(), j.GetProfile(), state, fmt.Sprintf("%d%%", p), dash(j.GetMessage()))
	return err
}
