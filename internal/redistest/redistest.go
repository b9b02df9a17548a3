// Package redistest starts real redis-server processes for tests: a
// standalone server or a 3-node cluster on free loopback ports, stopped
// when the test ends. Nothing is mocked.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	Port int
	dir  string
	args []string
	cmd  *exec.Cmd
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

func freePort(t testing.TB) int {
	t.Helper()
	port, err := loopback.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Start runs a standalone redis-server with no persistence on a free port.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	Need(t)
	s := &Server{Port: freePort(t), dir: t.TempDir()}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", s.Port)
	s.args = append([]string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
	}, extra...)
	s.start(t)
	t.Cleanup(func() { s.Kill() })
	return s
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command("redis-server", s.args...)
	s.cmd.Dir = s.dir
	log, err := os.Create(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if reply, err := s.Do("PING"); err == nil && reply == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			t.Fatalf("redis-server on %s never answered PING:\n%s", s.Addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
	s.start(t)
}

// Do sends one command over a fresh connection and returns the reply as
// text (simple strings, integers and bulk strings; arrays joined by \n).
// It is for test plumbing, not for the code under test.
func (s *Server) Do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// Cluster is a 3-master Redis Cluster, no replicas.
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

// StartCluster runs three cluster-enabled servers and joins them, with the
// 16384 slots spread over them, and waits until the cluster is ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	Need(t)
	c := &Cluster{}
	for range 3 {
		c.Nodes = append(c.Nodes, Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		for {
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster never became ok: %q %v", info, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
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
	s := &Server{Port: freePort(t), dir: t.TempDir()}
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
	s.start(t)
	t.Cleanup(func() { s.Kill() })
	return s
}
