//go:build unix

package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestDemoPageInBrowser opens the demo page through the demo Caddyfile in
// headless Chromium, as a person would, and checks what they would see:
// three screens play, the fourth shows the 429 refusal, closing one lets
// the fourth start (browser/demo.test.mjs drives the page).
//
// It needs Debian's chromium and playwright-core (browser/node_modules):
// `make test-browser` installs both and requires the test to run
// (STREAMLIMIT_BROWSER=require), and so does CI=true, which .ci/run sets
// after installing both; elsewhere `make test` runs it wherever Chromium
// is installed, and skips it without.
func TestDemoPageInBrowser(t *testing.T) {
	required := os.Getenv("STREAMLIMIT_BROWSER") == "require" || os.Getenv("CI") == "true"
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (./scripts/deps.sh browser installs it)"
		if required {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	chromium := cmp.Or(os.Getenv("CHROMIUM"), "/usr/bin/chromium")
	if _, err := os.Stat(chromium); err != nil {
		missing("no Chromium at %s", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("no node on PATH")
	}
	browserDir, err := filepath.Abs("../../browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core")); err != nil {
		missing("playwright-core is not installed in browser/")
	}

	addr, admin := startDemo(t)
	shots := cmp.Or(os.Getenv("SCREENSHOT_DIR"), t.TempDir())
	// A hung Chromium must fail this test, not stall `go test` until its
	// -timeout panics with node and Chromium left running: they share a
	// process group, killed whole at the deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "demo.test.mjs")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(), "BASE_URL=http://"+addr, "ADMIN_URL=http://"+admin, "SCREENSHOT_DIR="+shots, "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("browser/demo.test.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed (%v); a screenshot of the failure is in %s", err, shots)
	}
}
