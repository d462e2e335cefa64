package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/store"
)

// etcdCluster is a cluster of real etcd processes (Debian's etcd-server) on
// loopback, each member killed and restarted by its PID.
type etcdCluster struct {
	t       *testing.T
	members []*etcdMember
}

type etcdMember struct {
	name, dir, client string
	args              []string
	cmd               *exec.Cmd
	exited            chan struct{}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startEtcdCluster starts n members and waits until the cluster commits; it
// skips the test when the etcd binary is missing.
func startEtcdCluster(t *testing.T, n int) *etcdCluster {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("needs Debian's etcd-server (scripts/install-deps.sh):", err)
	}
	c := &etcdCluster{t: t}
	var initial []string
	peers := make([]string, n)
	for i := range n {
		peers[i] = freePort(t)
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i, peers[i]))
	}
	for i := range n {
		m := &etcdMember{name: fmt.Sprintf("m%d", i), dir: filepath.Join(t.TempDir(), "etcd"), client: freePort(t)}
		m.args = []string{bin, "--name", m.name, "--data-dir", m.dir,
			"--listen-client-urls", "http://" + m.client, "--advertise-client-urls", "http://" + m.client,
			"--listen-peer-urls", "http://" + peers[i], "--initial-advertise-peer-urls", "http://" + peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "bootchain-test", "--heartbeat-interval", "50", "--election-timeout", "500",
			"--logger", "zap", "--log-level", "error"}
		c.members = append(c.members, m)
		c.start(m)
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			c.stop(m)
		}
	})
	testkit.EventuallyWithin(t, 60*time.Second, "etcd cluster commits", func() bool {
		st, err := store.Open(context.Background(), store.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second})
		if err != nil {
			return false
		}
		defer st.Close()
		_, err = st.Client().Put(context.Background(), store.Root+"cluster-up", "1")
		return err == nil
	})
	return c
}

// Endpoints are the members' client addresses.
func (c *etcdCluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.client)
	}
	return out
}

func (c *etcdCluster) start(m *etcdMember) {
	c.t.Helper()
	log, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	m.cmd = exec.Command(m.args[0], m.args[1:]...)
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		c.t.Fatalf("etcd %s: %v", m.name, err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(m.cmd, m.exited)
}

// stop kills the member (SIGKILL, by its PID) and waits for it to exit.
func (c *etcdCluster) stop(m *etcdMember) {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}
