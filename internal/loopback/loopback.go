// Package loopback finds free ports on 127.0.0.1 and waits for servers to
// listen there: what the tests, their harnesses and the benchmark share.
package loopback

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago,
// and that no other process of the project's tests was given (claim).
func FreeAddr() (string, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().(*net.TCPAddr)
		ok, err := claim(addr.Port)
		l.Close()
		if err != nil {
			return "", err
		}
		if ok {
			return addr.String(), nil
		}
	}
	return "", fmt.Errorf("no free port that another test process had not claimed in 100 tries")
}

// FreePort is FreeAddr's port.
func FreePort() (int, error) {
	addr, err := FreeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	var n int
	_, err = fmt.Sscan(port, &n)
	return n, err
}

// Addr is FreeAddr for tests: it fails t rather than return an error.
func Addr(t testing.TB) string {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Port is FreePort for tests: it fails t rather than return an error.
func Port(t testing.TB) int {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// WaitListening waits until something accepts connections on addr.
func WaitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never listened: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
