//go:build unix

package main

import (
	"cmp"
	"os"
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
	chromium, node, browserDir := needBrowser(t, "playwright-core")

	addr, admin := startDemo(t)
	shots := cmp.Or(os.Getenv("SCREENSHOT_DIR"), t.TempDir())
	cmd := browserScript(t, 3*time.Minute, node, browserDir, "demo.test.mjs")
	cmd.Env = append(os.Environ(), "BASE_URL=http://"+addr, "ADMIN_URL=http://"+admin, "SCREENSHOT_DIR="+shots, "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("browser/demo.test.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed (%v); a screenshot of the failure is in %s", err, shots)
	}
}
