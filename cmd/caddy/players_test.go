//go:build unix

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// playerMatrix is which stock browser player plays which layouts of the
// test media (issue 13): hls.js the HLS ones, dash.js the DASH ones, Shaka
// Player both kinds.
var playerMatrix = []struct {
	player  string
	layouts []string
}{
	{"hls.js", []string{"flat", "fmp4", "renditions", "updir", "abspath", "sameurl"}},
	{"dash.js", []string{"dash", "dashtl"}},
	{"shaka", []string{"renditions", "fmp4", "dash", "dashtl"}},
}

// playersSite is one site of the players' Caddyfile: the player page and
// its scripts (browser/) outside the limiter, the media behind it. One
// user may hold one stream, so that a second playback is refused.
const playersSite = `
http://%[1]s {
	handle_path /players/* {
		root * %[2]s
		file_server
	}
	handle {
		stream_limit {
			zone %[3]s
			mode session
			path_token
			limit 1
			lease %[4]s
			list_path /streams%[5]s
		}
		reverse_proxy %[6]s
	}
}
`

// playersLease is the sites' lease: short, so that a playback is seen to
// hold its slot past it, yet longer than a starved browser may stall
// between segments. The lease is the grace a playback has beyond the
// media it was served; with every case at once on a loaded two-core CI
// machine, one hls.js page asked for its second segment 7.5 s after its
// first (2 s of media), and a 4 s lease lapsed in between. playersMaxBuffer is the max_buffer of the site
// where players are closed: stock hls.js and dash.js keep 30 s and more
// buffered ahead, so under the default max_buffer (10m) a closed player's
// slot would outlive it by that much and the lease; a small one bounds how
// long a stopped player holds its slot, whatever it had buffered. The site
// where players play past their lease keeps the default.
const (
	playersLease     = 10 * time.Second
	playersMaxBuffer = 6 * time.Second
)

// TestPlayers plays the test media with stock hls.js, dash.js and Shaka
// Player, in their default configuration, in headless Chromium through
// stream_limit (browser/players.test.mjs drives them; players.html sets
// only the user header). For each player and layout: a playback holds one
// slot for as long as it plays, past its lease; a second one of the same
// user is refused at its start while the first plays on; a closed player's
// slot frees itself once its media would have played out; every request
// the player made but its start carried the stream's token; and the origin
// never saw one.
//
// It runs where TestDemoPageInBrowser runs: it needs Debian's chromium and
// browser/node_modules (playwright-core and the players), is skipped
// without them, and fails without them under CI=true or
// STREAMLIMIT_BROWSER=require.
func TestPlayers(t *testing.T) {
	chromium, node, browserDir := needBrowser(t, "playwright-core", "hls.js", "dashjs", "shaka-player")
	media := testmedia.Dir(t)

	// The origin's books: every path it was asked for (origintest) and
	// every request that reached it with a token in its query or headers.
	var mu sync.Mutex
	var leaked []string
	files := testmedia.Origin(media)
	origin := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Has("stream_id") || strings.Contains(r.URL.RawQuery, "~sl") || r.Header.Get("Stream-Id") != "" {
			mu.Lock()
			leaked = append(leaked, r.URL.RequestURI())
			mu.Unlock()
		}
		files.ServeHTTP(w, r)
	}))

	// mainAddr is where playbacks run past their lease and are refused a
	// second screen, stopAddr where they are closed.
	mainAddr, stopAddr := loopback.Addr(t), loopback.Addr(t)
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n}\n", loopback.Addr(t)) +
		fmt.Sprintf(playersSite, mainAddr, browserDir, "players", playersLease, "", origin.Addr) +
		fmt.Sprintf(playersSite, stopAddr, browserDir, "players_stop", playersLease, "\n\t\t\tmax_buffer "+playersMaxBuffer.String(), origin.Addr)
	startCaddy(t, cfg, mainAddr, stopAddr)

	type testCase struct {
		Player string `json:"player"`
		Layout string `json:"layout"`
		Src    string `json:"src"`
	}
	var cases []testCase
	for _, row := range playerMatrix {
		for _, layout := range row.layouts {
			cases = append(cases, testCase{row.player, layout, testmedia.Entry[layout]})
		}
	}
	casesJSON, _ := json.Marshal(cases)
	resultsFile := filepath.Join(t.TempDir(), "results.json")

	cmd := browserScript(t, 4*time.Minute, node, browserDir, "players.test.mjs")
	cmd.Env = append(os.Environ(),
		"MAIN_URL=http://"+mainAddr,
		"STOP_URL=http://"+stopAddr,
		"LEASE_MS="+strconv.FormatInt(playersLease.Milliseconds(), 10),
		"MAX_BUFFER_MS="+strconv.FormatInt(playersMaxBuffer.Milliseconds(), 10),
		"CASES="+string(casesJSON),
		"RESULTS="+resultsFile,
		"RUN="+strconv.FormatInt(time.Now().UnixNano(), 36),
		"CHROMIUM="+chromium,
	)
	started := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("browser/players.test.mjs (%s):\n%s", time.Since(started).Round(100*time.Millisecond), out)
	if err != nil {
		t.Fatalf("the player matrix did not run: %v", err)
	}
	b, err := os.ReadFile(resultsFile)
	if err != nil {
		t.Fatal(err)
	}
	var results []playerResult
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatalf("results: %v", err)
	}

	paths := origin.Paths()
	for _, row := range playerMatrix {
		t.Run(row.player, func(t *testing.T) {
			for _, layout := range row.layouts {
				t.Run(layout, func(t *testing.T) {
					i := slices.IndexFunc(results, func(r playerResult) bool {
						return r.Player == row.player && r.Layout == layout
					})
					if i < 0 {
						t.Fatal("no result")
					}
					r := results[i]
					for _, note := range r.Notes {
						t.Log(note)
					}
					for _, p := range r.Problems {
						t.Error(p)
					}
					if len(under(paths, "/"+layout+"/")) == 0 {
						t.Errorf("the origin served nothing under /%s/", layout)
					}
					if t.Failed() {
						for _, screen := range []string{"first", "second", "stopped"} {
							t.Logf("%s screen's media requests (ms since its page opened, status, URL):\n%s", screen, r.Logs[screen])
						}
						t.Logf("origin paths under /%s/:\n%s", layout, strings.Join(under(paths, "/"+layout+"/"), "\n"))
					}
				})
			}
		})
	}

	// The origin is shared by every case: its books are checked once.
	for _, p := range paths {
		if strings.Contains(p, "~sl") || strings.Contains(p, "stream_id") {
			t.Errorf("the origin was asked for %s: a token reached it", p)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, uri := range leaked {
		t.Errorf("the origin was sent %s with a token in its query or a Stream-Id header", uri)
	}
}

// playerResult is what browser/players.test.mjs found for one player and
// layout: what went wrong, what it saw, and each screen's media requests.
type playerResult struct {
	Player   string            `json:"player"`
	Layout   string            `json:"layout"`
	Problems []string          `json:"problems"`
	Notes    []string          `json:"notes"`
	Logs     map[string]string `json:"logs"`
}

// under lists the paths that start with prefix.
func under(paths []string, prefix string) []string {
	var out []string
	for _, p := range paths {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// browserScript is node running script in browserDir, killed with its
// Chromium at the test's end or after timeout: a hung Chromium must fail
// the test, not stall `go test` until its -timeout panics with node and
// Chromium left running (they share a process group, killed whole).
func browserScript(t *testing.T, timeout time.Duration, node, browserDir, script string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, node, script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = browserDir
	return cmd
}

// needBrowser returns Debian's chromium, node and the absolute browser/
// directory, once it has found them and the npm packages given installed
// there. Without them the test is skipped, or fails when it is required,
// as TestDemoPageInBrowser does.
func needBrowser(t *testing.T, packages ...string) (chromium, node, browserDir string) {
	t.Helper()
	required := os.Getenv("STREAMLIMIT_BROWSER") == "require" || os.Getenv("CI") == "true"
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (./scripts/deps.sh browser installs it)"
		if required {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	chromium = cmp.Or(os.Getenv("CHROMIUM"), "/usr/bin/chromium")
	if _, err := os.Stat(chromium); err != nil {
		missing("no Chromium at %s", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("no node on PATH")
	}
	browserDir, err = filepath.Abs("../../browser")
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range packages {
		if _, err := os.Stat(filepath.Join(browserDir, "node_modules", pkg, "package.json")); err != nil {
			missing("%s is not installed in browser/", pkg)
		}
	}
	return chromium, node, browserDir
}

// startCaddy runs the built Caddy on the Caddyfile cfg until the test
// ends, and returns once each of addrs listens.
func startCaddy(t *testing.T, cfg string, addrs ...string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	runCaddy(t, "", nil, "run", "--config", file)
	for _, addr := range addrs {
		waitListening(t, addr)
	}
}
