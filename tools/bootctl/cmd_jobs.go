package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func jobClient(g *Global) (bootapiv1.JobServiceClient, error) {
	cc, err := g.Conn("bootapi")
	if err != nil {
		return nil, err
	}
	return bootapiv1.NewJobServiceClient(cc), nil
}

func jobStateName(s bootapiv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

func jobRow(j *bootapiv1.Job) []string {
	return []string{j.GetId(), j.GetMac(), j.GetProfile(), jobStateName(j.GetState()), fmt.Sprintf("%d%%", j.GetProgress()), ts(j.GetCreateTime()), ts(j.GetUpdateTime()), dash(j.GetMessage())}
}

var jobHeader = []string{"ID", "MAC", "PROFILE", "STATE", "PROGRESS", "CREATED", "UPDATED", "MESSAGE"}

func runJobs(ctx context.Context, g *Global, args []string) error {
	return subcommand(ctx, g, "jobs", args, map[string]func(context.Context, *Global, []string) error{
		"create": func(ctx context.Context, g *Global, args []string) error {
			fs := flag.NewFlagSet("jobs create", flag.ContinueOnError)
			mac := fs.String("mac", "", "machine MAC (required)")
			profile := fs.String("profile", "", "profile to boot once (required)")
			timeout := fs.Duration("timeout", 0, "time from dispatch to a final report (default 1h)")
			if err := fs.Parse(args); err != nil {
				return err
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			req := &bootapiv1.CreateJobRequest{Mac: *mac, Profile: *profile}
			if *timeout > 0 {
				req.Timeout = durationpb.New(*timeout)
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.CreateJob(ctx, req)
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, r.GetJob())
			}
			return printTable(g, jobHeader, [][]string{jobRow(r.GetJob())})
		},
		"list": func(ctx context.Context, g *Global, args []string) error {
			fs := flag.NewFlagSet("jobs list", flag.ContinueOnError)
			mac := fs.String("mac", "", "only this machine")
			states := fs.String("state", "", "only these states (comma-separated: pending,dispatched,running,...)")
			if err := fs.Parse(args); err != nil {
				return err
			}
			req := &bootapiv1.ListJobsRequest{Mac: *mac}
			for _, s := range strings.Split(*states, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				v, ok := bootapiv1.JobState_value["JOB_STATE_"+strings.ToUpper(s)]
				if !ok {
					return fmt.Errorf("unknown state %q", s)
				}
				req.States = append(req.States, bootapiv1.JobState(v))
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.ListJobs(ctx, req)
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, r)
			}
			var rows [][]string
			for _, j := range r.GetJobs() {
				rows = append(rows, jobRow(j))
			}
			return printTable(g, jobHeader, rows)
		},
		"get": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("jobs get ID")
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.GetJob(ctx, &bootapiv1.GetJobRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return printJSON(g, r.GetJob())
		},
		"cancel": func(ctx context.Context, g *Global, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("jobs cancel ID")
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, g.Timeout)
			defer cancel()
			r, err := c.CancelJob(ctx, &bootapiv1.CancelJobRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if g.JSON() {
				return printJSON(g, r.GetJob())
			}
			return printTable(g, jobHeader, [][]string{jobRow(r.GetJob())})
		},
		"watch": func(ctx context.Context, g *Global, args []string) error {
			fs := flag.NewFlagSet("jobs watch", flag.ContinueOnError)
			mac := fs.String("mac", "", "only this machine")
			id := fs.String("id", "", "only this job")
			until := fs.Bool("until-done", false, "exit when the watched job (-id) finishes")
			if err := fs.Parse(args); err != nil {
				return err
			}
			c, err := jobClient(g)
			if err != nil {
				return err
			}
			stream, err := c.WatchJobs(ctx, &bootapiv1.WatchJobsRequest{Mac: *mac, Id: *id})
			if err != nil {
				return err
			}
			for {
				ev, err := stream.Recv()
				if errors.Is(err, io.EOF) || ctx.Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				j := ev.GetJob()
				if g.JSON() {
					printJSON(g, ev)
				} else {
					fmt.Fprintf(g.Out, "%s  %s  %s  %-10s %3d%%  %s\n", time.Now().Format("15:04:05"), j.GetId(), j.GetMac(), jobStateName(j.GetState()), j.GetProgress(), j.GetMessage())
				}
				if *until && *id != "" && j.GetId() == *id && j.GetFinishTime() != nil {
					return nil
				}
			}
		},
	})
}
