package loopback

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestAPortIsHandedOutOnce: a port one process of the tests was given is
// never taken by another, even once its probe has closed it (the moment in
// which two Caddy processes could both bind it, with SO_REUSEPORT).
func TestAPortIsHandedOutOnce(t *testing.T) {
	if parent := os.Getenv("LOOPBACK_PARENT_PORT"); parent != "" {
		// The child: may it take the parent's port?
		port, err := strconv.Atoi(parent)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := claim(port)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("took the parent's port: %v\n", ok)
		return
	}
	port := Port(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAPortIsHandedOutOnce$")
	cmd.Env = append(os.Environ(), "LOOPBACK_PARENT_PORT="+strconv.Itoa(port))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the other process: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "took the parent's port: false") {
		t.Fatalf("another process could take port %d, which this one was given:\n%s", port, out)
	}
}
