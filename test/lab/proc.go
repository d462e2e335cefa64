//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a process started by Lab.Start. Its exit is collected in the background,
// so use Proc's methods, not Cmd.Wait.
type Proc struct {
	// Cmd is the started command.
	Cmd *exec.Cmd

	done chan struct{}
	err  error // exit status, valid once done is closed
}

func startProc(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Own process group: Stop signals the group, so children (nginx workers, a shell's
	// subprocesses) go too. Pdeathsig: if this program dies, so does the process.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", cmd.Path, err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns the exit status (as from exec.Cmd.Wait) once the process has exited,
// and nil before.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Wait waits for the process to exit and returns its exit status, or ctx's error if
// ctx ends first (the process keeps running then).
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal sends sig to the process group while the process has not been reaped (so
// the PID cannot have been reused).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	err := syscall.Kill(-p.PID(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Stop ends the process: SIGTERM to its process group, SIGKILL after grace, then it
// waits (bounded) for the exit. A process that already exited is left alone.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("lab: SIGTERM pid %d: %w", p.PID(), err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("lab: SIGKILL pid %d: %w", p.PID(), err)
	}
	t.Reset(5 * time.Second)
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("lab: pid %d did not exit after SIGKILL", p.PID())
	}
}
