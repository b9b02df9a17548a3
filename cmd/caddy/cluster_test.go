package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// instance is one Caddy process of a fleet sharing one Redis.
type instance struct {
	addr string
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

const fleetSite = `
	route /s/* {
		stream_limit {
			mode session
			lease 3s
			list_path /s/streams
			store redis {
				address %[1]s
			}
		}
		reverse_proxy %[2]s
	}
	route /e/* {
		stream_limit {
			zone evict
			lease 3s
			on_limit evict_oldest
			store redis {
				address %[1]s
			}
		}
		reverse_proxy %[2]s
	}
	route /c/* {
		stream_limit {
			lease 3s
			list_path /c/streams
			store redis {
				address %[1]s
			}
		}
		reverse_proxy %[2]s
	}
	route /p/* {
		stream_limit {
			zone tok
			mode session
			path_token
			lease 3s
			store redis {
				address %[1]s
			}
		}
		reverse_proxy %[2]s
	}`

// fleetLease is the lease of fleetSite's zones; they renew every third of
// it. slack is what the bounds on slots freed by a dead or stopped instance
// leave on top of the lease for a loaded machine: process starts, polling,
// the race detector.
const (
	fleetLease   = 3 * time.Second
	fleetRenewal = fleetLease / 3
	slack        = 2 * time.Second
)

// startFleet runs n Caddy processes with the same config, sharing redis.
func startFleet(t *testing.T, n int, redisAddr, origin string) []*instance {
	var fleet []*instance
	for range n {
		in := &instance{addr: loopback.Addr(t), logs: &bytes.Buffer{}}
		cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n\tgrace_period 2s\n}\nhttp://%s {\n%s\n}\n",
			loopback.Addr(t), in.addr, fmt.Sprintf(fleetSite, redisAddr, origin))
		file := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		in.cmd = exec.Command(caddyBin, "run", "--config", file)
		in.cmd.Stdout, in.cmd.Stderr = in.logs, in.logs
		if err := in.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			in.cmd.Process.Kill()
			in.cmd.Wait()
			if t.Failed() {
				t.Logf("caddy %s output:\n%s", in.addr, in.logs)
			}
		})
		waitListening(t, in.addr)
		fleet = append(fleet, in)
	}
	return fleet
}

func waitListening(t *testing.T, addr string) {
	if err := loopback.WaitListening(addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

var noReuse = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}, Timeout: 30 * time.Second}

func status(t *testing.T, method, url, user string) int {
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("X-User-Id", user)
	resp, err := noReuse.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// startsAtOnce fires starts simultaneously, spread over the fleet, one
// user per entry of users; it returns how many each user got admitted.
func startsAtOnce(t *testing.T, fleet []*instance, users []string) map[string]int {
	var mu sync.Mutex
	admitted := map[string]int{}
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			code := status(t, http.MethodGet, "http://"+fleet[i%len(fleet)].addr+"/s/index.m3u8", u)
			if code != http.StatusOK && code != http.StatusTooManyRequests {
				t.Errorf("start for %s: status %d", u, code)
			}
			if code == http.StatusOK {
				mu.Lock()
				admitted[u]++
				mu.Unlock()
			}
		}()
	}
	close(gate)
	wg.Wait()
	return admitted
}

func TestFleetSharingRedisAdmitsExactlyTheLimit(t *testing.T) {
	srv := redistest.Start(t)
	fleet := startFleet(t, 3, srv.Addr, origintest.Start(t).Addr)

	for round := range 5 {
		user := fmt.Sprintf("one-%d", round)
		users := make([]string, 300)
		for i := range users {
			users[i] = user
		}
		if got := startsAtOnce(t, fleet, users)[user]; got != 3 {
			t.Fatalf("round %d: 300 simultaneous starts over 3 instances admitted %d, want 3", round, got)
		}
	}
	for round := range 3 {
		var users []string
		for i := range 50 {
			for range 8 {
				users = append(users, fmt.Sprintf("many-%d-%d", round, i))
			}
		}
		got := startsAtOnce(t, fleet, users)
		for i := range 50 {
			u := fmt.Sprintf("many-%d-%d", round, i)
			if got[u] != 3 {
				t.Fatalf("round %d: user %s got %d streams from 8 simultaneous starts, want 3", round, u, got[u])
			}
		}
	}
}

func TestKilledInstanceFreesItsSlotsWithinALease(t *testing.T) {
	srv := redistest.Start(t)
	fleet := startFleet(t, 2, srv.Addr, origintest.Start(t).Addr)
	victim, survivor := fleet[0], fleet[1]

	// The victim holds three long connection-mode streams.
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+victim.addr+"/c/slow/v.ts", nil)
		req.Header.Set("X-User-Id", "alice")
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d on the victim: %v %v", i, err, resp)
		}
		go func() { io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
	}
	if code := status(t, http.MethodGet, "http://"+survivor.addr+"/c/slow/v.ts", "alice"); code != http.StatusTooManyRequests {
		t.Fatalf("the survivor admitted a fourth stream: %d", code)
	}

	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.cmd.Wait()
	killed := time.Now() // the victim died before this

	// Each lease the dead proxy left expires at most one lease after its
	// last renewal, which was before the kill.
	req, _ := http.NewRequest(http.MethodGet, "http://"+survivor.addr+"/c/streams", nil)
	req.Header.Set("X-User-Id", "alice")
	resp, err := noReuse.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Streams []struct{ Expires time.Time } }
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	for _, s := range list.Streams {
		if s.Expires.After(killed.Add(fleetLease + 100*time.Millisecond)) {
			t.Fatalf("a dead proxy's lease runs until %v, past the kill (%v) plus the lease", s.Expires, killed)
		}
	}

	// So the survivor admits three new streams within a lease of the kill;
	// the bound adds a renewal interval (a renewal the victim sent just
	// before it died) and slack. Leases that outlived their proxy would
	// keep the slots for good.
	admitted := 0
	deadline := killed.Add(fleetLease + fleetRenewal + slack)
	var held []*http.Response
	for admitted < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the survivor admitted only %d of 3 streams %v after the kill (lease %v, renewal every %v)",
				admitted, time.Since(killed).Round(10*time.Millisecond), fleetLease, fleetRenewal)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+survivor.addr+"/c/slow/v.ts", nil)
		req.Header.Set("X-User-Id", "alice")
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			admitted++
			held = append(held, resp)
			continue
		}
		resp.Body.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the survivor admitted 3 new streams %v after the kill (lease %v, renewal every %v)", time.Since(killed).Round(10*time.Millisecond), fleetLease, fleetRenewal)
	for _, r := range held {
		r.Body.Close()
	}
}

// openStream starts a long connection-mode stream and drains it; done
// receives when the stream ends.
func openStream(t *testing.T, url, user string) (code int, done chan struct{}) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("X-User-Id", user)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		close(done)
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return resp.StatusCode, done
}

// TestEvictionOnAnotherInstanceCutsTheStream: a stream held on one
// instance and evicted by a start on another is cut at its next renewal.
func TestEvictionOnAnotherInstanceCutsTheStream(t *testing.T) {
	srv := redistest.Start(t)
	fleet := startFleet(t, 2, srv.Addr, origintest.Start(t).Addr)
	var streams []chan struct{}
	for i := range 3 {
		code, done := openStream(t, "http://"+fleet[0].addr+"/e/slow/v.ts", "alice")
		if code != http.StatusOK {
			t.Fatalf("stream %d: %d", i, code)
		}
		streams = append(streams, done)
		time.Sleep(5 * time.Millisecond) // distinct start times
	}
	evicted := time.Now()
	if code, _ := openStream(t, "http://"+fleet[1].addr+"/e/slow/v.ts", "alice"); code != http.StatusOK {
		t.Fatalf("evicting start on the other instance: %d", code)
	}
	select {
	case <-streams[0]:
		t.Logf("the evicted stream was cut %v after the eviction (renewal every 1s)", time.Since(evicted).Round(10*time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the evicted stream on the first instance was never cut")
	}
	for i, done := range streams[1:] {
		select {
		case <-done:
			t.Fatalf("stream %d, not the oldest, was cut", i+1)
		default:
		}
	}
}

// TestAClosedStreamIsNotReopenedElsewhere: a path_token stream closed
// through one instance is not continued by another on what that one last
// knew, when its client opens the title again there: the player gets a
// stream of its own (a new id), not the closed one's playlist. The
// instance had confirmed the stream's lease more than a renewal interval
// before, and held it for the media it had served, so that nothing but a
// store call could tell it of the close.
func TestAClosedStreamIsNotReopenedElsewhere(t *testing.T) {
	srv := redistest.Start(t)
	origin := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if filepath.Ext(r.URL.Path) == ".m3u8" {
			w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
			io.WriteString(w, "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4.0,\nseg0.ts\n#EXTINF:4.0,\nseg1.ts\n#EXT-X-ENDLIST\n")
			return
		}
		w.Header().Set("Content-Type", "video/mp2t")
		w.Write(make([]byte, 188))
	}))
	fleet := startFleet(t, 2, srv.Addr, origin.Addr)
	open := func(in *instance) (id, playlist string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+in.addr+"/p/title/index.m3u8", nil)
		req.Header.Set("X-User-Id", "viewer")
		resp, err := noReuse.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("opening the title: %s %s", resp.Status, b)
		}
		return resp.Header.Get("Stream-Id"), string(b)
	}
	id, playlist := open(fleet[1])
	for _, line := range strings.Split(playlist, "\n") {
		if strings.HasPrefix(line, "~sl-") {
			if code := status(t, http.MethodGet, "http://"+fleet[1].addr+"/p/title/"+line, "viewer"); code != http.StatusOK {
				t.Fatalf("segment %s: %d", line, code)
			}
		}
	}
	// The media served is carried to the store within a renewal interval
	// (the keepalive); a renewal interval after that, the next request of
	// the stream here must ask the store again. (A third interval for a
	// loaded machine: the lease, carried through the 8 s of media, runs
	// on here all the while.)
	time.Sleep(3 * fleetRenewal)
	req, _ := http.NewRequest(http.MethodDelete, "http://"+fleet[0].addr+"/p/title/index.m3u8", nil)
	req.Header.Set("X-User-Id", "viewer")
	req.Header.Set("Stream-Id", id)
	resp, err := noReuse.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("closing the stream through the other instance: %s", resp.Status)
	}
	if again, _ := open(fleet[1]); again == id {
		t.Fatalf("the client opening its title again got the stream closed through the other instance, %s", id)
	}
}

// listCount reads how many streams user holds, through any instance.
func listCount(t *testing.T, in *instance, user string) int {
	req, _ := http.NewRequest(http.MethodGet, "http://"+in.addr+"/c/streams", nil)
	req.Header.Set("X-User-Id", user)
	resp, err := noReuse.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Streams []json.RawMessage }
	json.NewDecoder(resp.Body).Decode(&list)
	return len(list.Streams)
}

// holdThree opens three long streams of user on in.
func holdThree(t *testing.T, in *instance, user string) {
	for i := range 3 {
		if code, _ := openStream(t, "http://"+in.addr+"/c/slow/v.ts", user); code != http.StatusOK {
			t.Fatalf("stream %d on %s: %d", i, in.addr, code)
		}
	}
}

// waitForThree starts streams on in until three are admitted, by deadline,
// checking all along that the user never holds more than three.
func waitForThree(t *testing.T, in *instance, user string, deadline time.Time) {
	began := time.Now()
	admitted := 0
	for admitted < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 3 streams admitted after %v", admitted, time.Since(began).Round(10*time.Millisecond))
		}
		if n := listCount(t, in, user); n > 3 {
			t.Fatalf("%s holds %d streams: counted twice", user, n)
		}
		if code, _ := openStream(t, "http://"+in.addr+"/c/slow/v.ts", user); code == http.StatusOK {
			admitted++
			continue
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := listCount(t, in, user); n != 3 {
		t.Fatalf("%s holds %d streams, want 3", user, n)
	}
}

// TestKillRestartAndGracefulStop: a Caddy killed with -9 and started again
// holds no slot past a lease; one stopped gracefully with live streams has
// given their slots back by the time it exits. Neither ever lets a user
// hold more than the limit.
func TestKillRestartAndGracefulStop(t *testing.T) {
	srv := redistest.Start(t)
	origin := origintest.Start(t).Addr

	first := startFleet(t, 1, srv.Addr, origin)[0]
	holdThree(t, first, "alice")
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.cmd.Wait()
	killed := time.Now()
	restarted := startFleet(t, 1, srv.Addr, origin)[0]
	// The dead instance's leases lapse within a lease of the kill (plus a
	// renewal it may have sent as it died). The restart itself may take
	// longer than that on a loaded machine: then the slots are free when
	// it is up, and it gets the slack alone.
	deadline := killed.Add(fleetLease + fleetRenewal + slack)
	if up := time.Now().Add(slack); up.After(deadline) {
		deadline = up
	}
	waitForThree(t, restarted, "alice", deadline)
	t.Logf("after kill -9 and restart: 3 new streams admitted %v after the kill (lease %v)", time.Since(killed).Round(10*time.Millisecond), fleetLease)

	// A graceful stop (SIGINT) with three live streams. Another instance,
	// already up, looks at the slots the moment the stopped one has exited:
	// they are free already, where leases left behind would hold them for
	// up to a lease more.
	holdThree(t, restarted, "bob")
	next := startFleet(t, 1, srv.Addr, origin)[0]
	restarted.cmd.Process.Signal(syscall.SIGINT)
	restarted.cmd.Wait()
	if n := listCount(t, next, "bob"); n != 0 {
		t.Fatalf("a gracefully stopped instance has exited with %d of its 3 streams still held (lease %v)", n, fleetLease)
	}
	waitForThree(t, next, "bob", time.Now().Add(slack))
}
