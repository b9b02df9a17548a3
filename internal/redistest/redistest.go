// Package redistest starts real redis-server processes for tests: a
// standalone server, a 3-node cluster, a replica or a sentinel, on free
// loopback ports, stopped when the test ends. Nothing is mocked. Launch and
// LaunchCluster do the same for the benchmark, which stops them itself.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	Port int
	dir  string
	args []string
	cmd  *exec.Cmd
	// filler is Fill's client, one for every Fill: each new connection
	// would take memory of its own.
	filler *redis.Client
	filled int // the keys Fill has written
}

// Available reports whether redis-server can be run here; tests skip
// without it only when not in CI (make test installs it).
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Need skips the test when redis-server is missing, except under CI=true
// (.ci/run sets it), where it fails: there `make test` must have installed
// it, and a skipped test would pass unseen.
func Need(t testing.TB) {
	t.Helper()
	if Available() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("redis-server is not installed (CI=true: required; make test installs it)")
	}
	t.Skip("redis-server is not installed (make test installs it)")
}

// Start runs a standalone redis-server with no persistence on a free port.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	Need(t)
	s, err := Launch(t.TempDir(), extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Launch is Start for programs that are not tests (the benchmark): the
// server keeps its files in dir, and the caller kills it.
func Launch(dir string, extra ...string) (*Server, error) {
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Port: port, Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	s.args = append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
	}, extra...)
	return s, s.start()
}

func (s *Server) start() error {
	s.cmd = exec.Command("redis-server", s.args...)
	s.cmd.Dir = s.dir
	logPath := filepath.Join(s.dir, "redis.log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if reply, err := s.Do("PING"); err == nil && reply == "PONG" {
			return nil
		}
		if time.Now().After(deadline) {
			s.Kill()
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("redis-server on %s never answered PING:\n%s", s.Addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Running reports whether the server's process runs (it was not killed,
// or was started again since).
func (s *Server) Running() bool { return s.cmd != nil }

// Kill stops the server at once (SIGKILL): its data is gone.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Freeze stops the server's process (SIGSTOP) and leaves its socket open:
// the kernel still accepts connections, and nothing answers them, as from a
// host that hung. Kill and Restart work on a frozen server.
func (s *Server) Freeze() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Restart kills the server and starts it again, empty, on the same port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// Do sends one command over a connection of its own, so that it works
// the same on a sentinel, after a Restart and during a Freeze (when it
// times out). It returns the reply as text: arrays (nested too) joined by
// \n, a nil reply as "". It is for test plumbing, not for the code under
// test, which gets a Client.
func (s *Server) Do(args ...string) (string, error) {
	c := redis.NewClient(&redis.Options{
		Addr:        s.Addr,
		DialTimeout: time.Second,
		ReadTimeout: 10 * time.Second,
		// RESP2 keeps every reply an array or a scalar; no retries, as a
		// single command on its own connection is what tests expect.
		Protocol:        2,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
	})
	defer c.Close()
	cmdArgs := make([]any, len(args))
	for i, a := range args {
		cmdArgs[i] = a
	}
	reply, err := c.Do(context.Background(), cmdArgs...).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return text(reply), nil
}

func text(reply any) string {
	switch r := reply.(type) {
	case string:
		return r
	case []any:
		parts := make([]string, len(r))
		for i, p := range r {
			parts[i] = text(p)
		}
		return strings.Join(parts, "\n")
	case nil:
		return ""
	}
	return fmt.Sprint(reply)
}

// Cluster is a 3-master Redis Cluster: with no replicas (StartCluster), or
// with one replica for each master (StartReplicatedCluster).
type Cluster struct {
	Nodes []*Server
}

// Addrs lists the nodes' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Client returns a cluster client seeded with every node, closed when the
// test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { client.Close() })
	return client
}

// StartCluster runs three cluster-enabled servers and joins them, with the
// 16384 slots spread over them, and waits until the cluster is ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	Need(t)
	c, err := LaunchCluster(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}

// LaunchCluster is StartCluster for programs that are not tests (the
// benchmark): each node keeps its files in a directory of its own under
// dir, and the caller kills the nodes (Kill).
func LaunchCluster(dir string) (*Cluster, error) { return launchCluster(dir, 0, 5*time.Second) }

// ClusterNodeTimeout is how long the nodes of StartReplicatedCluster wait
// for a master's answer before they take it for failed and promote its
// replica.
const ClusterNodeTimeout = time.Second

// StartReplicatedCluster is StartCluster with a replica for each master,
// quick to fail over (ClusterNodeTimeout). A node killed and started again
// (Server.Restart keeps its nodes.conf) rejoins as a replica of the node
// promoted in its place.
func StartReplicatedCluster(t testing.TB) *Cluster {
	t.Helper()
	Need(t)
	c, err := launchCluster(t.TempDir(), 1, ClusterNodeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}

func launchCluster(dir string, replicas int, nodeTimeout time.Duration) (*Cluster, error) {
	c := &Cluster{}
	for i := range 3 * (1 + replicas) {
		nodeDir := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			c.Kill()
			return nil, err
		}
		args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10)}
		if replicas > 0 {
			// A replica fails over however long ago it last heard from its
			// master (a replica that was itself just started again, and
			// paused masters, would otherwise hold it back).
			args = append(args, "--cluster-replica-validity-factor", "0")
		}
		n, err := Launch(nodeDir, args...)
		if err != nil {
			c.Kill()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.join(replicas); err != nil {
		c.Kill()
		return nil, err
	}
	return c, nil
}

// Masters are the nodes that answer as masters now (ROLE): after a
// failover, the promoted replicas in place of the failed masters.
func (c *Cluster) Masters() []*Server {
	var out []*Server
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue // killed
		}
		if role, err := n.Do("ROLE"); err == nil && strings.HasPrefix(role, "master\n") {
			out = append(out, n)
		}
	}
	return out
}

// Failover kills a master and waits until its replica has taken its place
// (three masters answer again) and every slot is served; then starts the
// killed node again (Server.Restart), which rejoins as the new master's
// replica. (Started again before its replica took its place, it would
// come back a master with none of its data: a master with no persistence
// must not come back by itself.)
func (c *Cluster) Failover(t testing.TB, master *Server, timeout time.Duration) error {
	master.Kill()
	defer master.Restart(t) // (after a failed failover too: its slots are served by none but it)
	deadline := time.Now().Add(timeout)
	for len(c.Masters()) < 3 {
		if time.Now().After(deadline) {
			return fmt.Errorf("no replica took the place of the killed master %s within %v", master.Addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c.WaitOK(time.Until(deadline))
}

// WaitOK waits until every node that answers says the cluster is ok, with
// every slot served: after a failover, once a replica has taken the failed
// master's place.
func (c *Cluster) WaitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.Nodes {
		for n.cmd != nil { // (a killed node is not asked)
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("cluster never became ok on %s: %q %v", n.Addr, info, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// join assigns the slots over the masters, each of the replicas to one,
// and waits until every node says the cluster is ok.
func (c *Cluster) join(replicas int) error {
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	return c.WaitOK(30 * time.Second)
}

// Kill stops every node at once (Server.Kill).
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// StartReplica runs a server that replicates master.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	host, port, _ := net.SplitHostPort(master.Addr)
	return Start(t, "--replicaof", host, port)
}

// SentinelDownAfter is how long a sentinel of StartSentinel waits for an
// answer from the master before it declares it down.
const SentinelDownAfter = time.Second

// StartSentinel runs a sentinel watching master under name, quick to act:
// it declares the master down after SentinelDownAfter and needs only its
// own vote.
func StartSentinel(t testing.TB, name string, master *Server) *Server {
	t.Helper()
	Need(t)
	s := &Server{Port: loopback.Port(t), dir: t.TempDir()}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", s.Port)
	host, port, _ := net.SplitHostPort(master.Addr)
	conf := filepath.Join(s.dir, "sentinel.conf")
	cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
		"sentinel monitor %s %s %s 1\n"+
		"sentinel down-after-milliseconds %s %d\n"+
		"sentinel failover-timeout %s 5000\n"+
		"sentinel parallel-syncs %s 1\n",
		s.Port, s.dir, name, host, port, name, SentinelDownAfter.Milliseconds(), name, name)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s.args = []string{conf, "--sentinel"}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}
