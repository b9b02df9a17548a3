package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// The player matrix for command-line players (issue 13): stock mpv,
// streamlink, yt-dlp and VLC, with their default settings, play the test
// title's packager layouts through a real Caddy with stream_limit
// (path_token, limit 1) in front of the test media origin. For each
// client and layout, one viewer starts two playbacks half a second apart,
// and:
//
//  1. one of them holds one slot for its whole playback: the viewer's
//     count is 1 while it plays, never 2, and, from its first media on,
//     never 0 before its player stops;
//  2. the other, the limit+1th, is refused at its start with 429, and the
//     admitted one is refused nothing;
//  3. the slot frees once the admitted player stops, within what its
//     lease may still cover (below);
//  4. no token reaches the origin, in a path or a query.
//
// Leases follow playback: a player that fetched ahead keeps its slot until
// that media would have played out, plus lease, capped by max_buffer. These
// players fetch far ahead (mpv and VLC buffer tens of seconds, streamlink and
// yt-dlp download the whole 90 s title at once), so with the default
// max_buffer (10m) a stopped player would hold its slot for the rest of the
// title. The site caps it at 5s, with lease 5s, so that a slot frees within
// 10 s of a stop and each test runs in seconds; a lease shorter still would
// lapse between a manifest and the first segment when a Python client is
// slowed by a loaded machine. The players that play in real time play 6 s,
// which max_buffer plus lease still covers: the only option given to a
// client limits how long it plays, never what or how far ahead it fetches.
//
// Caddy is one per process: each client has its own test function, and
// its layouts play at once, in subtests, each as its own viewer. When a
// client misbehaves through the limiter, the failure lists what the proxy
// answered to each request, the viewer's count over time, and what the
// players printed.

const (
	matrixLease     = 5 * time.Second
	matrixMaxBuffer = 5 * time.Second
	// matrixPlayFor is how much of the title the real-time players play.
	matrixPlayFor = 6 * time.Second
	// matrixDeadline bounds a player's run: a client stuck after an error
	// is ended there. It keeps a broken run from hanging and asserts no
	// speed: on a loaded machine a Python client can take 20 s to start.
	matrixDeadline = matrixPlayFor + 40*time.Second
)

// matrixPassword is basic_auth's password for the VLC viewers, and
// matrixPasswordHash its bcrypt hash (cost 4: the test's logins need no
// slow hash).
const (
	matrixPassword     = "screen"
	matrixPasswordHash = "$2a$04$Dfon/bLcZLchxwzJk2RZF.LKPZrxsjGYT5Zbm8bMMKGjPG0xg2NN."
)

// cliPlayer is one stock client of the matrix.
type cliPlayer struct {
	name string
	tool string // the executable that must be installed
	// layouts are those of testmedia the client plays.
	layouts []string
	// basicAuth: the client cannot send a header, so the viewer is who
	// basic_auth says, from credentials in the URL.
	basicAuth bool
	// exitUnchecked gives, for a layout, why the client's exit status says
	// nothing about the limiter: it fails the same way against a plain
	// file server. Its requests are still judged by Caddy's answers.
	exitUnchecked map[string]string
	// args are the client's arguments to play url as user on device (an
	// address), writing any file it makes into dir.
	args func(url, user, device, dir string) []string
}

// The HLS layouts every client plays: one playlist beside its segments, a
// master with a separate audio rendition, and segments kept apart with ../.
var matrixHLS = []string{"flat", "renditions", "updir"}

var (
	mpvPlayer = cliPlayer{
		name: "mpv", tool: "mpv",
		layouts: slices.Concat(matrixHLS, []string{"dash", "mp4"}),
		args: func(url, user, device, dir string) []string {
			// --no-config: the machine's or developer's mpv.conf plays no part.
			return []string{"--no-config", "--quiet", "--vo=null", "--ao=null",
				"--end=" + wholeSeconds(matrixPlayFor), "--http-header-fields=X-User-Id: " + user + ",X-Forwarded-For: " + device, url}
		},
	}
	streamlinkPlayer = cliPlayer{
		name: "streamlink", tool: "streamlink",
		layouts: slices.Concat(matrixHLS, []string{"dash"}),
		exitUnchecked: map[string]string{
			// Streamlink 5.2.1 muxes a separate audio track through ffmpeg
			// over named pipes; with an origin this fast its writers can be
			// done before ffmpeg reads, and ffmpeg finds no data. Seen
			// straight against a file server: every time on DASH, about one
			// run in six on the master with audio.
			"renditions": "streamlink's ffmpeg mux races a fast origin",
			"dash":       "streamlink's ffmpeg mux races a fast origin",
		},
		args: func(url, user, device, dir string) []string {
			return []string{"--http-header", "X-User-Id=" + user, "--http-header", "X-Forwarded-For=" + device, "-o", filepath.Join(dir, "out.ts"), url, "best"}
		},
	}
	ytDLPPlayer = cliPlayer{
		name: "yt-dlp", tool: "yt-dlp",
		layouts: slices.Concat(matrixHLS, []string{"dash", "mp4"}),
		args: func(url, user, device, dir string) []string {
			// Its default output: a file named after the title, in dir (its
			// working directory).
			return []string{"--add-header", "X-User-Id:" + user, "--add-header", "X-Forwarded-For:" + device, url}
		},
	}
	vlcPlayer = cliPlayer{
		name: "vlc", tool: "cvlc",
		// Not mp4: a progressive file's start is redirected to its
		// tokenized URL, and VLC drops the credentials of its URL when it
		// follows a redirect (README: "Unmodified players"). Not updir:
		// VLC 3.0.24 drops them too when it resolves "../" in a playlist,
		// straight against a file server behind basic auth (it asks for
		// ../segments/a000.ts without Authorization).
		layouts:   []string{"flat", "renditions", "dash"},
		basicAuth: true,
		args: func(url, user, device, dir string) []string {
			// VLC sends no header of ours: its devices differ by their
			// User-Agent, an option of the input (after its URL).
			return []string{"--play-and-exit", "--stop-time=" + wholeSeconds(matrixPlayFor),
				"--vout=vdummy", "--aout=adummy", url, ":http-user-agent=VLC on " + device}
		},
	}
)

func wholeSeconds(d time.Duration) string { return fmt.Sprint(int(d.Seconds())) }

func TestMatrixMPV(t *testing.T)        { runCLIMatrix(t, mpvPlayer) }
func TestMatrixStreamlink(t *testing.T) { runCLIMatrix(t, streamlinkPlayer) }
func TestMatrixYtDLP(t *testing.T)      { runCLIMatrix(t, ytDLPPlayer) }

// TestMatrixVLC: VLC has no option to send a request header, so the viewer is
// basic_auth's, from credentials in the URL (http://user:pass@host/…), with
// basic_auth before stream_limit and key {http.auth.user.id}.
func TestMatrixVLC(t *testing.T) { runCLIMatrix(t, vlcPlayer) }

// needCLIPlayer skips the test when the client is not installed, except
// under CI=true, where it fails: there make test must have installed it.
func needCLIPlayer(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true: required; make test installs it)", tool)
		}
		t.Skipf("%s is not installed (make test installs it)", tool)
	}
}

// matrixSite is the site of the matrix: stream_limit with path_token and
// limit 1 in front of origin, an access log in logFile, and basic_auth for
// users when there are any.
func matrixSite(origin, logFile string, users []string) string {
	key, auth := "", ""
	if len(users) > 0 {
		key = "key {http.auth.user.id}"
		var accounts strings.Builder
		for _, u := range users {
			fmt.Fprintf(&accounts, "\t\t\t%s %s\n", u, matrixPasswordHash)
		}
		auth = "basic_auth {\n" + accounts.String() + "\t\t}"
	}
	return fmt.Sprintf(`
	log {
		output file %s
	}
	route /* {
		%s
		stream_limit {
			%s
			mode session
			path_token
			limit 1
			lease %v
			max_buffer %v
			list_path /streams
		}
		reverse_proxy %s
	}`, logFile, auth, key, matrixLease, matrixMaxBuffer, origin)
}

// runCLIMatrix plays each of the client's layouts through one Caddy, in
// parallel, each as its own viewer.
func runCLIMatrix(t *testing.T, c cliPlayer) {
	needCLIPlayer(t, c.tool)
	needFFmpeg(t) // makes the media; streamlink and yt-dlp also mux with it
	origin := newURIOrigin(t, testmedia.Dir(t))
	logFile := filepath.Join(t.TempDir(), "access.log")
	viewers := map[string]viewer{}
	var users []string
	for _, layout := range c.layouts {
		v := viewer{user: c.name + "-" + layout}
		if c.basicAuth {
			v.password = matrixPassword
			users = append(users, v.user)
		}
		viewers[layout] = v
	}
	p := startCaddy(t, matrixSite(origin.Addr, logFile, users))
	// The layouts play at once, each in a subtest run from its own
	// goroutine rather than with t.Parallel, which go test would hold to
	// GOMAXPROCS at a time: the subtests mostly wait on their players.
	var wg sync.WaitGroup
	for _, layout := range c.layouts {
		wg.Go(func() {
			t.Run(layout, func(t *testing.T) {
				playMatrixLayout(t, p, c, layout, viewers[layout], logFile, origin)
			})
		})
	}
	wg.Wait()
}

// playMatrixLayout runs the four checks of the matrix for one client and
// layout. Two playbacks of the viewer start half a second apart: the
// second's start arrives while the first plays, even for a client that
// fetches a whole progressive file in less time than it takes to start.
// Each playback's URL carries a label (?run=first, ?run=second) that the
// origin ignores and Caddy's log shows, so that every request a client makes
// without a token (its start, a reopening of its start URL) is told apart.
func playMatrixLayout(t *testing.T, p *proxy, c cliPlayer, layout string, v viewer, logFile string, origin *uriOrigin) {
	entry := testmedia.Entry[layout]
	prefix := "/" + strings.SplitN(entry[1:], "/", 2)[0] + "/" // the layout's directory
	t0 := time.Now()
	watch := watchHeld(p, v)
	runs := map[string]*cliRun{}
	for i, label := range []string{"first", "second"} {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		// Two devices of the viewer (an address each): one device opening
		// a title again is the same playback.
		runs[label] = startCLIPlayer(t, c, v.url(p, entry+"?run="+label), v.user, fmt.Sprintf("10.9.0.%d", i+1))
	}

	// The stream admitted, and the playback it is: the one whose start the
	// proxy answered with it (the first, unless the second's start got
	// there first).
	var admitted, other string
	var entries []proxyEntry
	deadline := time.Now().Add(matrixDeadline)
	for admitted == "" && time.Now().Before(deadline) && (runs["first"].running() || runs["second"].running()) {
		time.Sleep(100 * time.Millisecond)
		entries = readProxyLog(t, logFile, prefix)
		admitted = admittedRun(entries)
	}
	if admitted == "" {
		admitted = "first"
	}
	other = map[string]string{"first": "second", "second": "first"}[admitted]
	played, refused := runs[admitted], runs[other]

	// The refused playback's refusal is what this checks, not how the
	// client takes it: one that keeps waiting after it (VLC) is ended.
	for refused.running() && refusalOf(readProxyLog(t, logFile, prefix), other) == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	refused.waitUpTo(5 * time.Second)
	// The admitted playback plays on, up to its deadline; once the proxy
	// has refused it something, it has failed, and it is ended a play's
	// length later (time enough to see what the client does next).
	for played.running() && time.Now().Before(deadline) {
		if r := refusalTo(readProxyLog(t, logFile, prefix), admitted); r != nil {
			played.waitUpTo(time.Until(r.started().Add(matrixPlayFor + 5*time.Second)))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	played.waitUpTo(time.Until(deadline))
	stopped := played.ended

	// Then the slot frees within what the lease may still cover: the media
	// fetched ahead, capped by max_buffer, plus lease. (The bound is loose:
	// it asserts no speed, only that the slot does not outlive its lease.)
	freeBy := stopped.Add(matrixMaxBuffer + matrixLease + 10*time.Second)
	for watch.last() != 0 && time.Now().Before(freeBy) {
		time.Sleep(100 * time.Millisecond)
	}
	freed := time.Now()
	samples, werr := watch.halt()
	if werr != nil {
		t.Errorf("listing the viewer's streams failed: %v", werr)
	}
	entries = readProxyLog(t, logFile, prefix)

	failed := false
	fail := func(format string, args ...any) {
		t.Helper()
		failed = true
		t.Errorf(format, args...)
	}
	ids := streamIDs(entries)
	admittedID := ""
	for id, label := range ids {
		if label == admitted {
			admittedID = id
		}
	}

	most := 0
	for _, s := range samples {
		most = max(most, s.n)
	}
	if at := admissionOf(entries, other); !at.IsZero() && at.After(stopped) && most <= 1 {
		// On a loaded machine a client can take seconds to start: the
		// other playback came after the admitted one had stopped and its
		// lease had run out, so it rightly took the slot, and this run
		// says nothing about the limit.
		t.Logf("the proxy's answers:%s", describe(entries, t0))
		t.Skipf("inconclusive: the %s playback started %v after the %s one had stopped and its slot had lapsed",
			other, at.Sub(stopped).Round(100*time.Millisecond), admitted)
	}

	// 1. One slot, for the whole playback.
	if len(ids) == 0 {
		fail("neither playback was admitted")
	}
	if len(ids) > 1 {
		fail("the viewer's playbacks were admitted as %d streams (%v); want 1", len(ids), ids)
	}
	if most > 1 {
		fail("the viewer held %d streams at once; want 1", most)
	}
	// (From its first media on: before it, only manifests were fetched, and
	// a Python client on a loaded machine can take longer than a short
	// lease to get from them to a segment.)
	if lapsed := lapsedWhile(samples, firstMedia(entries, admittedID), stopped); !lapsed.IsZero() {
		fail("the %s playback lost its slot %v in, while its player still ran (it stopped at %v)", admitted,
			lapsed.Sub(t0).Round(100*time.Millisecond), stopped.Sub(t0).Round(100*time.Millisecond))
	}

	// 2. The other playback is refused at its start, with 429; the admitted
	// one is refused nothing.
	if r := refusalOf(entries, other); r == nil {
		fail("the %s playback was not refused at its start with 429", other)
	}
	for _, e := range entries {
		if e.refused() && ofRun(e, admitted, admittedID) {
			fail("the admitted (%s) playback was refused: %d %s", admitted, e.Status, tokenText.ReplaceAllString(e.Request.URI, "$1$2…"))
		}
	}
	if why, unchecked := c.exitUnchecked[layout]; unchecked && played.err != nil {
		t.Logf("the admitted (%s) playback failed (%v), not checked: %s", admitted, played.err, why)
	} else if played.err != nil {
		fail("the admitted (%s) playback failed: %v", admitted, played.err)
	}

	// 3. The slot frees after the player stops.
	if n := lastHeld(samples); n != 0 {
		fail("%v after the %s playback stopped the viewer still held %d streams; lease %v, max_buffer %v",
			freed.Sub(stopped).Round(100*time.Millisecond), admitted, n, matrixLease, matrixMaxBuffer)
	}

	// 4. The origin never saw a token.
	served := origin.under(prefix)
	for _, u := range served {
		if strings.Contains(u, PathTokenPrefix) || strings.Contains(u, StreamIDQuery) {
			fail("the origin was asked for %s", u)
		}
	}

	t.Logf("%s, %s: the proxy answered %s; the origin served %d requests; the admitted (%s) playback ran %v; the slot was free %v after it stopped",
		c.name, layout, statusCounts(entries), len(served), admitted, stopped.Sub(t0).Round(100*time.Millisecond),
		freed.Sub(stopped).Round(100*time.Millisecond))
	if failed {
		t.Logf("the proxy's answers:%s", describe(entries, t0))
		t.Logf("the viewer's live streams: %s", describeHeld(samples, t0))
		for _, label := range []string{admitted, other} {
			t.Logf("the %s playback (%v, exit %v):\n%s", label, runs[label].ended.Sub(t0).Round(100*time.Millisecond), runs[label].err, runs[label].tail())
		}
	}
}

// cliRun is one run of a client.
type cliRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	out    bytes.Buffer // written by the process until done
	err    error        // its exit, once done
	ended  time.Time
}

// startCLIPlayer runs the client on url as user, with a home of its own (no
// configuration but its defaults), ended at matrixDeadline at the latest.
// VLC refuses to run as root, so as root it runs as nobody.
func startCLIPlayer(t *testing.T, c cliPlayer, url, user, device string) *cliRun {
	t.Helper()
	home, err := os.MkdirTemp("", "matrix-"+c.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	ctx, cancel := context.WithTimeout(context.Background(), matrixDeadline)
	cmd := exec.CommandContext(ctx, c.tool, c.args(url, user, device, home)...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home, "XDG_DATA_HOME="+home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.tool == "cvlc" && os.Geteuid() == 0 {
		const nobody = 65534
		if err := os.Chown(home, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	// Its helpers (the ffmpeg that streamlink and yt-dlp run) end with it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	r := &cliRun{cancel: cancel, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", c.tool, err)
	}
	go func() {
		r.err = cmd.Wait()
		r.ended = time.Now()
		cancel()
		close(r.done)
	}()
	t.Cleanup(func() { r.waitUpTo(0) })
	return r
}

func (r *cliRun) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// waitUpTo waits for the run to end, and ends it after d.
func (r *cliRun) waitUpTo(d time.Duration) {
	select {
	case <-r.done:
		return
	case <-time.After(max(d, 0)):
	}
	r.cancel()
	<-r.done
	if r.err != nil && !errors.Is(r.err, context.Canceled) {
		r.err = fmt.Errorf("ended by the test: %w", r.err)
	}
}

// tail is the end of what the run printed.
func (r *cliRun) tail() string {
	const keep = 3000
	s := r.out.String()
	if len(s) > keep {
		s = "…" + s[len(s)-keep:]
	}
	return s
}
