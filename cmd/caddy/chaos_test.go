package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/chaos"
	"github.com/streamlimit/caddy-streamlimit/internal/faultproxy"
	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
)

// The chaos run's flags: `make chaos` sets them; `make test` runs the
// defaults, a short run with a fixed seed.
var (
	chaosDuration = flag.Duration("chaos.duration", 40*time.Second, "how long the chaos run's viewers play and its faults strike")
	chaosSeed     = flag.Uint64("chaos.seed", 1, "the chaos run's seed: the faults, their times and targets, and the viewers' choices (0: a new one, printed)")
	chaosKeep     = flag.Bool("chaos.keep", false, "keep the run's history (JSON) and the instances' logs in the temporary directory even when the limit was kept (a failed run always keeps them)")
	chaosStore    = flag.String("chaos.store", "redis", "the fleet's Redis: redis (standalone, a fault proxy before it for each instance), sentinel (a master, a replica and a sentinel; failovers) or cluster (3 masters, each with a replica; failovers)")
)

// The chaos fleet's zones: conn (connection mode, on_store_error allow,
// the default), sess (session mode, on_store_error deny) and tok (session
// mode with path_token, sharing strict, for unmodified HLS players: see
// chaos_token_test.go), each with a lease of 2 s, renewed every 667 ms.
// chaosZones are the zones' names.
var chaosZones = []string{"conn", "sess", "tok"}

const (
	chaosLease   = 2 * time.Second
	chaosLimit   = 3
	chaosTimeout = 250 * time.Millisecond // each Redis call's bound
)

const chaosSite = `{
	admin %[1]s
	auto_https off
	persist_config off
	grace_period 1s
}
http://%[2]s {
	route /c/* {
		stream_limit {
			zone conn
			lease 2s
			%[3]s
		}
		reverse_proxy %[4]s {
			header_up X-Chaos-Via %[5]s
		}
	}
	route /s/* {
		stream_limit {
			zone sess
			mode session
			lease 2s
			on_store_error deny
			%[3]s
		}
		reverse_proxy %[4]s {
			header_up X-Chaos-Via %[5]s
		}
	}
	route /p/* {
		stream_limit {
			zone tok
			mode session
			path_token
			lease 2s
			max_buffer 8s
			%[3]s
		}
		reverse_proxy %[4]s {
			header_up X-Chaos-Via %[5]s
		}
	}
}
`

// TestChaos runs a fleet of 3 Caddy instances over one Redis, with honest
// viewers, greedy ones, and attackers racing closes, while faults strike
// at times drawn from the seed: kill -9 and restart of an instance,
// SIGSTOP of an instance or of Redis longer than a renewal interval, and
// as -chaos.store has it: with a standalone Redis (the default), a
// partition, latency or dropped connections between one instance and
// Redis (each instance reaches it through a fault proxy of its own); with
// Sentinel, the master killed and the replica promoted; with a Cluster
// (a replica for each master), a master killed and its replica promoted,
// or a node paused. Beside the faults an operator reloads configs, kicks live streams
// and sets and clears limit overrides. Then the history is checked
// (package chaos): from the
// origin's log, no user ever had more streams served at once than the
// limit outside the windows docs/GUARANTEES.md documents; no honest
// viewer was refused under the limit; no slot and no Redis key outlived
// the run.
func TestChaos(t *testing.T) {
	redistest.Need(t)
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d, %v over %s (replay: make chaos CHAOS_SEED=%d CHAOS_DURATION=%v CHAOS_STORES=%s)",
		seed, *chaosDuration, *chaosStore, seed, *chaosDuration, *chaosStore)
	r, rep := runChaos(t, seed, *chaosStore, *chaosDuration)
	t.Logf("seed %d:\n%s", seed, rep)
	if !rep.OK() {
		t.Errorf("the limit was not kept (seed %d); the history: %s", seed, r.keepHistory(seed))
	} else if *chaosKeep {
		t.Logf("the history: %s", r.keepHistory(seed))
	}
	r.checkNothingLeft(t)
}

// TestChaosCatchesAFleetThatDoesNotShare is the checker's control: the
// same run, with no faults, over a fleet whose instances each count alone
// (the memory store), must be found over the limit. A checker that finds
// nothing there would prove nothing elsewhere.
func TestChaosCatchesAFleetThatDoesNotShare(t *testing.T) {
	_, rep := runChaos(t, 1, "memory", 10*time.Second)
	t.Logf("%s", rep)
	if len(rep.Violations) == 0 {
		t.Errorf("3 instances each counting alone: no user found over the limit")
	}
}

// keepHistory writes the run's history (what the origin served, the
// viewers' starts, the events) as JSON to a file that outlives the test,
// for a look at what the checker found; it returns the file's name.
func (r *chaosRun) keepHistory(seed uint64) string {
	name := filepath.Join(os.TempDir(), fmt.Sprintf("streamlimit-chaos-%s-%d.json", r.store, seed))
	b, err := json.MarshalIndent(map[string]any{
		"served": r.origin.history(), "attempts": r.attempts, "events": r.events,
	}, "", " ")
	if err == nil {
		err = os.WriteFile(name, b, 0o644)
	}
	for _, in := range r.fleet {
		if err == nil {
			var logs []byte
			if logs, err = os.ReadFile(in.logFile); err == nil {
				err = os.WriteFile(strings.TrimSuffix(name, ".json")+"-"+in.name+".log", logs, 0o644)
			}
		}
	}
	if err != nil {
		return err.Error()
	}
	return name + " (and each instance's log beside it)"
}

// chaosRules are what the chaos fleet's config promises.
var chaosRules = chaos.Rules{Limit: chaosLimit, Lease: chaosLease, Slack: 2 * time.Second,
	CutWithin: chaosTimeout + 250*time.Millisecond, ShareFetches: 8}

// runChaos runs the viewers, the operator and the faults over a fleet on
// store for d, and checks the history.
func runChaos(t *testing.T, seed uint64, store string, d time.Duration) (*chaosRun, chaos.Report) {
	r := startChaos(t, seed, store)
	ctx, stop := context.WithTimeout(context.Background(), d)
	defer stop()
	var viewers, operators sync.WaitGroup
	for i := range 4 {
		for _, zone := range []string{"conn", "sess"} {
			user := fmt.Sprintf("honest-%s%d", zone[:1], i)
			for n := range chaosLimit {
				viewers.Go(func() { r.viewer(ctx, zone, user, true, n) })
			}
		}
	}
	for i := range 2 {
		for _, zone := range []string{"conn", "sess"} {
			user := fmt.Sprintf("greedy-%s%d", zone[:1], i)
			for n := range chaosLimit + 2 {
				viewers.Go(func() { r.viewer(ctx, zone, user, false, n) })
			}
		}
		viewers.Go(func() { r.attacker(ctx, fmt.Sprintf("attacker-%d", i)) })
	}
	r.tokViewers(ctx, &viewers)
	if store != "memory" {
		operators.Go(func() { r.faults(ctx) })
		operators.Go(func() { r.operator(ctx) })
	}
	viewers.Wait()
	operators.Wait()
	r.clearOverrides()
	return r, chaos.Check(chaosRules, r.origin.history(), r.attempts, r.events)
}

// chaosRun is one run: its fleet, its origin, and what it recorded.
type chaosRun struct {
	t     *testing.T
	seed  uint64
	store string
	// The Redis of each store: redis alone; master, replica and sentinel;
	// or cluster.
	redis             *redistest.Server
	replica, sentinel *redistest.Server
	cluster           *redistest.Cluster
	fleet             []*chaosInstance
	origin            *chaosOrigin
	client            *http.Client

	mu        sync.Mutex
	attempts  []chaos.Attempt
	events    []chaos.Event
	overrides map[[2]string]bool // zone, user: set by the operator
}

// chaosInstance is one Caddy of the fleet, on fixed ports so that it
// comes back where it was after a kill, with its own way to Redis. Its
// output goes to a file (a long run logs every stream it cuts), whose
// tail a failed run shows.
type chaosInstance struct {
	name, addr, admin, file, logFile string
	proxy                            *faultproxy.Proxy

	mu  sync.Mutex
	cmd *exec.Cmd
}

func startChaos(t *testing.T, seed uint64, store string) *chaosRun {
	r := &chaosRun{
		t: t, seed: seed, store: store, origin: startChaosOrigin(t),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: 3 * time.Second,
		}},
		overrides: map[[2]string]bool{},
	}
	switch store {
	case "redis":
		r.redis = redistest.Start(t)
	case "sentinel":
		r.redis = redistest.Start(t)
		r.replica = redistest.StartReplica(t, r.redis)
		r.sentinel = redistest.StartSentinel(t, chaosMaster, r.redis)
		r.waitReplicaKnown(t, 30*time.Second)
	case "cluster":
		r.cluster = redistest.StartReplicatedCluster(t)
	case "memory": // each instance counts alone: the checker's control
	default:
		t.Fatalf("-chaos.store %q: not redis, sentinel or cluster", store)
	}
	for i := range 3 {
		dir := t.TempDir()
		in := &chaosInstance{
			name: fmt.Sprintf("c%d", i+1), addr: loopback.Addr(t), admin: loopback.Addr(t),
			file: filepath.Join(dir, "Caddyfile"), logFile: filepath.Join(dir, "caddy.log"),
		}
		var address string
		switch store {
		case "redis":
			p, err := faultproxy.Start(r.redis.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			in.proxy = p
			address = "address " + p.Addr
		case "sentinel":
			address = "address " + r.sentinel.Addr + "\n\t\t\t\tmaster_name " + chaosMaster
		case "cluster":
			address = "address " + strings.Join(r.cluster.Addrs(), " ")
		}
		storeBlock := "store memory"
		if address != "" {
			storeBlock = fmt.Sprintf("store redis {\n\t\t\t\t%s\n\t\t\t\ttimeout %v\n\t\t\t}", address, chaosTimeout)
		}
		cfg := fmt.Sprintf(chaosSite, in.admin, in.addr, storeBlock, r.origin.addr, in.name)
		if err := os.WriteFile(in.file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		in.start(t)
		t.Cleanup(func() {
			in.mu.Lock()
			defer in.mu.Unlock()
			if in.cmd != nil {
				in.cmd.Process.Signal(syscall.SIGCONT)
				in.cmd.Process.Kill()
				in.cmd.Wait()
			}
			if b, err := os.ReadFile(in.logFile); err == nil && t.Failed() {
				t.Logf("caddy %s output (tail):\n%s", in.name, tail(string(b), 4000))
			}
		})
		r.fleet = append(r.fleet, in)
	}
	return r
}

// chaosMaster is the Sentinel run's master name.
const chaosMaster = "chaos"

// waitReplicaKnown waits until the sentinel knows the replica, which it
// learns from the master's INFO (every 10 s): only then can it fail over.
func (r *chaosRun) waitReplicaKnown(t *testing.T, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		// Each replica's entry starts with its name; the dead ones (a
		// killed master) stay listed, flagged s_down.
		port := r.replica.Addr[strings.LastIndex(r.replica.Addr, ":")+1:]
		out, err := r.sentinel.Do("SENTINEL", "REPLICAS", chaosMaster)
		for _, entry := range strings.Split(out, "name\n") {
			if err == nil && strings.Contains(entry, "port\n"+port+"\n") && !strings.Contains(entry, "s_down") &&
				strings.Contains(entry, "master-link-status\nok") {
				return true
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if t != nil {
		t.Fatalf("the sentinel never saw the replica %s", r.replica.Addr)
	}
	return false
}

// failover kills the master and waits for the sentinel to promote the
// replica; then starts a new replica of the new master, for the next.
func (r *chaosRun) failover() {
	old := r.redis
	old.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if out, err := r.sentinel.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", chaosMaster); err == nil && strings.Replace(out, "\n", ":", 1) == r.replica.Addr {
			r.redis = r.replica
			r.replica = redistest.StartReplica(r.t, r.redis)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Errorf("the sentinel did not promote %s within 20 s of the master's kill", r.replica.Addr)
}

// redisNodes are the servers that hold the run's keys now.
func (r *chaosRun) redisNodes() []*redistest.Server {
	if r.cluster != nil {
		return r.cluster.Nodes
	}
	return []*redistest.Server{r.redis}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (in *chaosInstance) start(t *testing.T) {
	logs, err := os.OpenFile(in.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer logs.Close() // the process has its own copy
	in.mu.Lock()
	in.cmd = exec.Command(caddyBin, "run", "--config", in.file)
	in.cmd.Stdout, in.cmd.Stderr = logs, logs
	err = in.cmd.Start()
	in.mu.Unlock()
	if err != nil {
		t.Error(err)
		return
	}
	if err := loopback.WaitListening(in.addr, 30*time.Second); err != nil {
		t.Error(err)
	}
}

func (in *chaosInstance) signal(sig syscall.Signal) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd != nil {
		in.cmd.Process.Signal(sig)
	}
}

func (in *chaosInstance) kill() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.cmd.Process.Kill()
	in.cmd.Wait()
	in.cmd = nil
}

// chaosOrigin serves every request as a trickle of MPEG-TS (until the
// client leaves, or for the ms the query asks: origintest.TrickleFor),
// and logs each with its start and end: the history the limit is judged
// by.
type chaosOrigin struct {
	addr string
	mu   sync.Mutex
	log  []chaos.Served
}

func startChaosOrigin(t *testing.T) *chaosOrigin {
	o := &chaosOrigin{addr: loopback.Addr(t)}
	srv := &http.Server{Addr: o.addr, Handler: o}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	if err := loopback.WaitListening(o.addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *chaosOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	zone, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	s := chaos.Served{
		Zone: map[string]string{"c": "conn", "s": "sess", "p": "tok"}[zone],
		User: r.Header.Get("X-User-Id"), Stream: r.Header.Get("X-Chaos-Stream"), Via: r.Header.Get("X-Chaos-Via"),
		Start: time.Now(),
	}
	defer func() {
		s.End = time.Now()
		o.mu.Lock()
		o.log = append(o.log, s)
		o.mu.Unlock()
	}()
	if s.Zone == "tok" {
		if strings.HasSuffix(r.URL.Path, ".m3u8") {
			w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
			io.WriteString(w, chaosPlaylist)
			return
		}
		s.Media = chaosSegment
		origintest.TrickleFor(w, r, chaosSegmentServed)
		return
	}
	d := time.Minute
	if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
		d = time.Duration(ms) * time.Millisecond
	}
	origintest.TrickleFor(w, r, d)
}

func (o *chaosOrigin) history() []chaos.Served {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]chaos.Served(nil), o.log...)
}

func (r *chaosRun) record(a chaos.Attempt) {
	r.mu.Lock()
	r.attempts = append(r.attempts, a)
	r.mu.Unlock()
}

func (r *chaosRun) event(e chaos.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// rng is a source drawn from the run's seed and a name, so that each
// viewer and each operator replays its own choices.
func (r *chaosRun) rng(name string) *rand.Rand {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(name) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(r.seed, h))
}

func sleepFor(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// send makes a request of a viewer to an instance: its user, the name of
// its playback (for the origin's log), and its stream id if any.
func (r *chaosRun) send(ctx context.Context, in *chaosInstance, method, path, user, stream, id string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+in.addr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-User-Id", user)
	req.Header.Set("X-Chaos-Stream", stream)
	if id != "" {
		req.Header.Set("Stream-Id", id)
	}
	return r.client.Do(req)
}

// viewer plays streams one after another until ctx ends: each held 1 to
// 4 s, then closed or, in session mode, sometimes left without a word.
// An honest viewer's user runs no more viewers than the limit; a greedy
// one's runs two more, and is refused.
func (r *chaosRun) viewer(ctx context.Context, zone, user string, honest bool, n int) {
	rng := r.rng(fmt.Sprintf("viewer %s %s %d", zone, user, n))
	for i := 0; ctx.Err() == nil; i++ {
		stream := fmt.Sprintf("%s-%d-%d", user, n, i)
		hold := between(rng, time.Second, 4*time.Second)
		a := chaos.Attempt{Zone: zone, User: user, Stream: stream, Honest: honest}
		if zone == "conn" {
			r.playConnection(ctx, rng, &a, hold)
		} else {
			r.playSession(ctx, rng, &a, hold)
		}
		r.record(a)
		wait := between(rng, 0, 500*time.Millisecond)
		if a.Status != http.StatusOK {
			wait += 300 * time.Millisecond // a player's back-off after an error
		}
		sleepFor(ctx, wait)
	}
}

// playConnection holds one connection-mode stream: one long request.
func (r *chaosRun) playConnection(ctx context.Context, rng *rand.Rand, a *chaos.Attempt, hold time.Duration) {
	in := r.fleet[rng.IntN(len(r.fleet))]
	reqCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.At = time.Now()
	resp, err := r.send(reqCtx, in, http.MethodGet, "/c/title/live.ts", a.User, a.Stream, "")
	if err != nil {
		return // no answer: the instance is down or paused
	}
	a.Status, a.ID = resp.StatusCode, resp.Header.Get("Stream-Id")
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return
	}
	a.Clean = readFor(ctx, resp.Body, hold)
	cancel()
	resp.Body.Close()
	a.Ended = time.Now()
}

// readFor reads body for d or until ctx ends, and says whether it could:
// false when the stream broke first (cut, or its instance went away).
func readFor(ctx context.Context, body io.Reader, d time.Duration) bool {
	deadline := time.Now().Add(d)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := body.Read(buf); err != nil {
			return false
		}
	}
	return true
}

// playSession plays one session-mode stream: a start, then a segment of
// 600 ms after another with its stream id, now and then through another
// instance, as a player behind a load balancer; a segment refused ends
// it. It ends with a close (DELETE), or, one time in four, in silence.
func (r *chaosRun) playSession(ctx context.Context, rng *rand.Rand, a *chaos.Attempt, hold time.Duration) {
	in := r.fleet[rng.IntN(len(r.fleet))]
	a.At = time.Now()
	status, id := r.segment(ctx, in, a.User, a.Stream, "")
	a.Status, a.ID = status, id
	if status != http.StatusOK {
		return
	}
	end := time.Now().Add(hold)
	for time.Now().Before(end) && ctx.Err() == nil {
		if rng.IntN(5) == 0 {
			in = r.fleet[rng.IntN(len(r.fleet))]
		}
		sleepFor(ctx, between(rng, 0, 300*time.Millisecond))
		switch status, _ := r.segment(ctx, in, a.User, a.Stream, id); status {
		case http.StatusOK:
		case 0:
			in = r.fleet[rng.IntN(len(r.fleet))] // no answer: another instance
		default:
			a.Ended = time.Now() // refused: the stream is over
			return
		}
	}
	if rng.IntN(4) == 0 {
		a.Ended = time.Now()
		return
	}
	a.Ended, a.Clean = r.closeStream("sess", a.User, a.Stream, id, in)
}

// segment fetches one segment (600 ms of trickle), whole.
func (r *chaosRun) segment(ctx context.Context, in *chaosInstance, user, stream, id string) (status int, gotID string) {
	reqCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.send(reqCtx, in, http.MethodGet, "/s/title/seg.ts?ms=600", user, stream, id)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && resp.StatusCode == http.StatusOK {
		return 0, resp.Header.Get("Stream-Id") // cut, or its instance went away
	}
	return resp.StatusCode, resp.Header.Get("Stream-Id")
}

// closeStream closes a stream (DELETE with its id) and logs the close at
// its 204; it returns when, and whether it was closed.
func (r *chaosRun) closeStream(zone, user, stream, id string, in *chaosInstance) (time.Time, bool) {
	reqCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sent := time.Now()
	resp, err := r.send(reqCtx, in, http.MethodDelete, "/s/title/seg.ts", user, stream, id)
	now := time.Now()
	if err != nil {
		return now, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return now, false
	}
	r.event(chaos.Event{Kind: chaos.Close, Zone: zone, User: user, ID: id, Start: sent, End: now})
	return now, true
}

// attacker races closes: it starts a stream and, while a long segment of
// it is served, closes it at the same moment as it fires four new starts
// and three more segments with the closed id, through every instance.
func (r *chaosRun) attacker(ctx context.Context, user string) {
	rng := r.rng("attacker " + user)
	for i := 0; ctx.Err() == nil; i++ {
		first := chaos.Attempt{Zone: "sess", User: user, Stream: fmt.Sprintf("%s-%d", user, i), At: time.Now()}
		first.Status, first.ID = r.segment(ctx, r.fleet[rng.IntN(len(r.fleet))], user, first.Stream, "")
		r.record(first)
		if first.Status != http.StatusOK {
			sleepFor(ctx, 500*time.Millisecond)
			continue
		}
		var wg sync.WaitGroup
		gate := make(chan struct{})
		wg.Go(func() { <-gate; r.closeStream("sess", user, first.Stream, first.ID, r.fleet[0]) })
		var mu sync.Mutex
		var fresh []chaos.Attempt
		for k := range 4 {
			in := r.fleet[(k+1)%len(r.fleet)]
			wg.Go(func() {
				<-gate
				a := chaos.Attempt{Zone: "sess", User: user, Stream: fmt.Sprintf("%s-%d-new%d", user, i, k), At: time.Now()}
				a.Status, a.ID = r.segment(ctx, in, user, a.Stream, "")
				mu.Lock()
				fresh = append(fresh, a)
				mu.Unlock()
			})
		}
		for k := range 3 {
			in := r.fleet[k%len(r.fleet)]
			wg.Go(func() { <-gate; r.segment(ctx, in, user, first.Stream, first.ID) })
		}
		close(gate)
		wg.Wait()
		for _, a := range fresh {
			if a.Status == http.StatusOK {
				a.Ended, a.Clean = r.closeStream("sess", user, a.Stream, a.ID, r.fleet[rng.IntN(len(r.fleet))])
			}
			r.record(a)
		}
		sleepFor(ctx, between(rng, 100*time.Millisecond, 600*time.Millisecond))
	}
}

// faults strikes one fault at a time, at times and on targets drawn from
// the seed, until ctx ends; each is logged with its span. Which faults
// there are depends on the store: the fault proxies stand before a
// standalone Redis only, failovers need Sentinel.
func (r *chaosRun) faults(ctx context.Context) {
	rng := r.rng("faults")
	kinds := []string{chaos.KillCaddy, chaos.PauseCaddy, chaos.PauseRedis}
	switch r.store {
	case "redis":
		kinds = append(kinds, chaos.Partition, chaos.Latency, chaos.DropConns)
	case "sentinel", "cluster":
		kinds = append(kinds, chaos.Failover)
	}
	lastFailover := time.Time{}
	for sleepFor(ctx, between(rng, 2*time.Second, 6*time.Second)) {
		in := r.fleet[rng.IntN(len(r.fleet))]
		e := chaos.Event{Kind: kinds[rng.IntN(len(kinds))], Target: in.name, Start: time.Now()}
		switch e.Kind {
		case chaos.KillCaddy:
			in.kill()
			time.Sleep(between(rng, 500*time.Millisecond, 2*time.Second))
			in.start(r.t)
		case chaos.PauseCaddy:
			in.signal(syscall.SIGSTOP)
			time.Sleep(between(rng, time.Second, 3500*time.Millisecond))
			in.signal(syscall.SIGCONT)
		case chaos.PauseRedis:
			// Under Sentinel or a Cluster, shorter than the time after
			// which a master is taken for failed: a pause, not a failover
			// (those are faults of their own, with their own window).
			longest := 2500 * time.Millisecond
			switch r.store {
			case "sentinel":
				longest = redistest.SentinelDownAfter / 2
			case "cluster":
				longest = redistest.ClusterNodeTimeout / 2
			}
			nodes := r.redisNodes()
			node := nodes[rng.IntN(len(nodes))]
			if !node.Running() {
				continue // killed by a failover that did not finish
			}
			e.Target = "redis " + node.Addr
			syscall.Kill(node.Pid(), syscall.SIGSTOP)
			time.Sleep(between(rng, 300*time.Millisecond, longest))
			syscall.Kill(node.Pid(), syscall.SIGCONT)
		case chaos.Failover:
			if time.Since(lastFailover) < 15*time.Second || (r.cluster == nil && !r.waitReplicaKnown(nil, 0)) {
				continue // the last failover's new replica may not be in sync yet
			}
			if r.cluster != nil {
				masters := r.cluster.Masters()
				master := masters[rng.IntN(len(masters))]
				e.Target = "redis " + master.Addr
				if err := r.cluster.Failover(r.t, master, 20*time.Second); err != nil {
					r.t.Error(err)
				}
			} else {
				e.Target = "redis " + r.redis.Addr
				r.failover()
			}
			lastFailover = time.Now()
		case chaos.Partition:
			in.proxy.Partition(true)
			time.Sleep(between(rng, time.Second, 3*time.Second))
			in.proxy.Partition(false)
		case chaos.Latency:
			in.proxy.Delay(between(rng, 50*time.Millisecond, 400*time.Millisecond))
			time.Sleep(between(rng, time.Second, 3*time.Second))
			in.proxy.Delay(0)
		case chaos.DropConns:
			in.proxy.Drop()
		}
		e.End = time.Now()
		r.event(e)
	}
}

// operator acts as an operator would, beside the faults: config reloads,
// kicks of live streams, per-user limit overrides set and cleared.
func (r *chaosRun) operator(ctx context.Context) {
	rng := r.rng("operator")
	users := map[string][]string{
		"conn": {"honest-c0", "greedy-c0"},
		"sess": {"honest-s1", "greedy-s1", "attacker-0"},
		"tok":  {"honest-p0", "honest-p1", "greedy-p0"},
	}
	for sleepFor(ctx, between(rng, 500*time.Millisecond, 2*time.Second)) {
		in := r.fleet[rng.IntN(len(r.fleet))]
		zone := chaosZones[rng.IntN(len(chaosZones))]
		switch rng.IntN(3) {
		case 0:
			start := time.Now()
			cfg, err := os.ReadFile(in.file)
			if err == nil && r.admin(in, http.MethodPost, "/load", "text/caddyfile", string(cfg)) == http.StatusOK {
				r.event(chaos.Event{Kind: chaos.Reload, Target: in.name, Start: start, End: time.Now()})
			}
		case 1:
			r.kick(in, zone, users[zone][rng.IntN(len(users[zone]))], rng)
		case 2:
			user := fmt.Sprintf("greedy-%s%d", zone[:1], rng.IntN(2))
			if zone == "tok" {
				user = "greedy-p0"
			}
			r.override(in, zone, user, rng.IntN(5)) // 0 clears it
		}
	}
}

// admin calls an instance's admin API, and returns the status (0: no
// answer).
func (r *chaosRun) admin(in *chaosInstance, method, path, contentType, body string) int {
	code, _ := r.adminBody(in, method, path, contentType, body)
	return code
}

func (r *chaosRun) adminBody(in *chaosInstance, method, path, contentType, body string) (int, []byte) {
	// Long enough for a paused instance to wake and answer: an answer
	// that never comes leaves the action indeterminate.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+in.admin+path, strings.NewReader(body))
	if err != nil {
		return 0, nil
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// kick lists a user's streams and kicks one.
func (r *chaosRun) kick(in *chaosInstance, zone, user string, rng *rand.Rand) {
	path := "/stream_limit/zones/" + zone + "/users/" + url.PathEscape(user)
	code, body := r.adminBody(in, http.MethodGet, path, "", "")
	var list struct{ Streams []struct{ ID string } }
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Streams) == 0 {
		return
	}
	id := list.Streams[rng.IntN(len(list.Streams))].ID
	sent := time.Now()
	if r.admin(in, http.MethodDelete, path+"/streams/"+url.PathEscape(id), "", "") == http.StatusNoContent {
		r.event(chaos.Event{Kind: chaos.Close, Target: in.name, Zone: zone, User: user, ID: id, Start: sent, End: time.Now()})
	}
}

// override sets a user's limit (0: clears it). A higher limit is logged
// from when it was asked for, a lower one from when it was answered: the
// checker gives each stream the highest limit it may have been admitted
// under.
func (r *chaosRun) override(in *chaosInstance, zone, user string, limit int) {
	path := "/stream_limit/zones/" + zone + "/users/" + url.PathEscape(user) + "/limit"
	effective := func(limit int) int {
		if limit == 0 {
			return chaosLimit
		}
		return limit
	}
	prev := chaosLimit
	r.mu.Lock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if e := r.events[i]; e.Kind == chaos.Override && e.Zone == zone && e.User == user {
			prev = effective(e.Limit)
			break
		}
	}
	r.mu.Unlock()
	asked := time.Now()
	var code int
	if limit == 0 {
		code = r.admin(in, http.MethodDelete, path, "", "")
	} else {
		code = r.admin(in, http.MethodPut, path, "application/json", fmt.Sprintf(`{"limit":%d}`, limit))
	}
	if code >= 400 && code < 500 {
		return // refused: not applied
	}
	at := time.Now()
	if effective(limit) > prev {
		at = asked
	}
	// With no answer (an instance killed with the call in hand) or a
	// store error (a write whose reply was lost), it may be applied.
	indeterminate := code != http.StatusOK && code != http.StatusNoContent
	if indeterminate {
		at = asked
	}
	r.event(chaos.Event{Kind: chaos.Override, Target: in.name, Zone: zone, User: user, Limit: limit, Start: at, End: at, Indeterminate: indeterminate})
	r.mu.Lock()
	r.overrides[[2]string{zone, user}] = limit != 0
	r.mu.Unlock()
}

// clearOverrides clears every override the operator left, as an operator
// ends a test: none may stay in Redis.
func (r *chaosRun) clearOverrides() {
	r.mu.Lock()
	var left [][2]string
	for k, set := range r.overrides {
		if set {
			left = append(left, k)
		}
	}
	r.mu.Unlock()
	for _, k := range left {
		r.override(r.fleet[0], k[0], k[1], 0)
	}
}

// checkNothingLeft checks that, once every viewer has quit, no slot
// outlives a lease and a renewal interval (leaks), and no Redis key
// outlives the tombstones (but the id secret, which lives on).
func (r *chaosRun) checkNothingLeft(t *testing.T) {
	rules := chaosRules
	quit := time.Now()
	// A tok stream that stopped holds its slot while the media it was
	// served plays, as the limiter counts it (up to max_buffer), and a
	// lease.
	time.Sleep(chaosMaxBuffer + rules.Lease + rules.Lease/3 + rules.Slack)
	for _, zone := range chaosZones {
		code, body := r.adminBody(r.fleet[0], http.MethodGet, "/stream_limit/zones/"+zone, "", "")
		var totals struct{ Streams int }
		if code != http.StatusOK || json.Unmarshal(body, &totals) != nil {
			t.Errorf("zone %s totals: %d %s", zone, code, body)
			continue
		}
		t.Logf("zone %s: %d slots held %v after the last viewer quit", zone, totals.Streams, time.Since(quit).Round(time.Millisecond))
		if totals.Streams != 0 {
			t.Errorf("zone %s: %d slots leaked", zone, totals.Streams)
			for _, user := range []string{"honest-p0", "honest-p1", "greedy-p0"} {
				_, body := r.adminBody(r.fleet[0], http.MethodGet, "/stream_limit/zones/"+zone+"/users/"+user, "", "")
				t.Logf("zone %s, %s: %s", zone, user, body)
			}
		}
	}
	deadline := quit.Add(lease.TombstoneTTL(rules.Lease) + rules.Slack)
	for {
		var keys []string
		for _, n := range r.redisNodes() {
			out, err := n.Do("KEYS", "*")
			if err != nil {
				t.Fatal(err)
			}
			if out != "" {
				keys = append(keys, strings.Split(out, "\n")...)
			}
		}
		left := keys[:0]
		for _, k := range keys {
			if !strings.HasSuffix(k, "secret") {
				left = append(left, k)
			}
		}
		if len(left) == 0 {
			t.Logf("no Redis key left %v after the last viewer quit", time.Since(quit).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Redis keys left %v after the last viewer quit: %v", time.Since(quit).Round(time.Millisecond), left)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
