// Command bench measures stream_limit against plain reverse_proxy in one
// run: it starts an origin, a redis-server and three Caddy processes (plain
// reverse_proxy; stream_limit on the memory store; stream_limit on Redis),
// drives each with the same load from this process, and prints ratios
// against plain reverse_proxy. The fleet scenario (fleet.go) compares 3
// Caddys with one, over a Redis Cluster. Absolute numbers on a shared
// machine drift; the ratios, measured side by side, hold. Run it with
// `make bench`.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

var (
	caddyBin = flag.String("caddy", "", "the Caddy binary with stream_limit (built by make bench)")
	duration = flag.Duration("duration", time.Second, "how long each measurement runs")
	workers  = flag.Int("workers", 32, "concurrent clients")
	rounds   = flag.Int("rounds", 15, "measurements of each target per scenario, interleaved; the median is reported")
	users    = flag.Int("users", 1000, "users in the steady-playback scenario, 3 streams each")
	only     = flag.String("scenarios", "abcde", "the scenarios to run: (a) steady, (b) churn, (c) denial storm, (d) manifests, (e) fleet")
	segments = flag.String("playlist-segments", "10,300,1000", "the sizes, in segments of 2 s, of the media playlists of the manifests scenario, one table each: a live window, and DVR windows of 10 and 33 minutes")
	pin      = flag.Bool("pin", true, "on two or more cores, run the Caddys under test on core 0 and this process (load, origin, Redis) on core 1, with taskset")
	profiles = flag.String("profile", "", "a directory to write each target's CPU profile, and the profile of what it allocated, over its last round of each scenario to (Caddy's admin /debug/pprof; of a fleet, its first Caddy's)")
)

// scenario is the name of the scenario running, for the profiles' names.
var scenario string

// atExit holds what must be undone before the bench exits, even on a
// failure: the Caddys and the redis-servers it started.
var atExit []func()

// fatalf ends the bench on a failure, stopping what it started first.
func fatalf(format string, args ...any) {
	for i := len(atExit) - 1; i >= 0; i-- {
		atExit[i]()
	}
	log.Fatalf(format, args...)
}

func fatal(v ...any) { fatalf("%s", fmt.Sprint(v...)) }

// pinnedEnv marks the bench re-run under taskset on core 1.
const pinnedEnv = "STREAMLIMIT_BENCH_PINNED"

func main() {
	flag.Parse()
	if *caddyBin == "" {
		fatal("-caddy is required")
	}
	pinning := "not pinned (one core, or -pin=false)"
	if os.Getenv(pinnedEnv) != "" {
		pinning = "each Caddy under test pinned to core 0; load, origin and Redis to core 1 (taskset)"
	} else if *pin && runtime.NumCPU() >= 2 {
		if taskset, err := exec.LookPath("taskset"); err == nil {
			os.Exit(rerunPinned(taskset))
		}
		pinning = "not pinned (no taskset)"
	}
	dir, err := os.MkdirTemp("", "streamlimit-bench-")
	if err != nil {
		fatal(err)
	}
	atExit = append(atExit, func() { os.RemoveAll(dir) })
	store, err := redistest.Launch(dir)
	if err != nil {
		fatal(err)
	}
	atExit = append(atExit, func() { store.Kill() })
	origin := startOrigin()
	targets := startTargets(dir, origin, store.Addr)
	defer func() {
		for i := len(atExit) - 1; i >= 0; i-- {
			atExit[i]()
		}
	}()

	fmt.Printf("# make bench: %d workers, %v per measurement, %d rounds, %d users x 3 streams, %s, %s\n\n",
		*workers, *duration, *rounds, *users, pinning, time.Now().UTC().Format(time.RFC3339))
	for _, sc := range []struct {
		name string
		run  func([]*target)
	}{
		{"a", steadyPlayback}, {"b", churn}, {"c", denialStorm}, {"d", manifests},
		{"e", func([]*target) { fleet(dir, origin) }},
	} {
		if strings.Contains(*only, sc.name) {
			scenario = sc.name
			sc.run(targets)
		}
	}
}

// rerunPinned runs this bench again on core 1 and returns its exit code;
// the run there starts the Caddys on core 0.
func rerunPinned(taskset string) int {
	self, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	cmd := exec.Command(taskset, append([]string{"-c", "1", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), pinnedEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			return exit.ExitCode()
		}
		fatal(err)
	}
	return 0
}

// routes are every target's routes, by path, with the stream_limit
// options of the limited targets' zone there. Plain reverse_proxy has the
// same routes, so that it matches paths as the limited targets do.
var routes = []struct{ path, zone string }{
	{"/s/*", "mode session\n\t\t\tzone s"},
	{"/c/*", "zone c"},
	{"/m/*", "mode session\n\t\t\tpath_token\n\t\t\tzone m"},
	{"/storm/*", "mode session\n\t\t\tzone storm\n\t\t\tlease 1h"},
}

// siteFor writes a target's site: each route proxies to origin, after a
// stream_limit with the store block store when limited.
func siteFor(limited bool, store, origin string) string {
	var b strings.Builder
	for _, r := range routes {
		fmt.Fprintf(&b, "\troute %s {\n", r.path)
		if limited {
			fmt.Fprintf(&b, "\t\tstream_limit {\n\t\t\t%s\n\t\t\t%s\n\t\t}\n", r.zone, store)
		}
		fmt.Fprintf(&b, "\t\treverse_proxy %s\n\t}\n", origin)
	}
	return b.String()
}

// startTargets starts the Caddys under test, plain reverse_proxy first.
func startTargets(dir, origin, redisAddr string) []*target {
	targets := []*target{
		{name: "plain reverse_proxy", site: siteFor(false, "", origin)},
		{name: "stream_limit, memory", site: siteFor(true, "", origin)},
		{
			name:  "stream_limit, redis",
			site:  siteFor(true, "store redis {\n\t\t\t\taddress "+redisAddr+"\n\t\t\t}", origin),
			redis: []*redis.Client{redis.NewClient(&redis.Options{Addr: redisAddr})},
		},
	}
	for _, t := range targets {
		atExit = append(atExit, t.stop)
		t.start(dir)
	}
	return targets
}

// steadyPlayback is scenario (a): every request continues one of users x 3
// live session streams and fetches a 16 KiB segment.
func steadyPlayback(targets []*target) {
	ids := map[*target][]string{}
	for _, t := range targets {
		ids[t] = t.startStreams(*users, 3)
	}
	res := measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		return steady(t, ids[t]), http.StatusOK
	})
	// Store calls per request: the Redis target alone, for long enough
	// that every stream is renewed on its own schedule (interleaved rounds
	// leave streams idle between them, so each round would start with a
	// renewal of every stream).
	withRedis := targets[slices.IndexFunc(targets, func(t *target) bool { return t.redis != nil })]
	load(steady(withRedis, ids[withRedis]), http.StatusOK) // every stream renewed once
	before := withRedis.redisCalls()
	long := max(*duration*4, 30*time.Second)
	run := loadFor(long, steady(withRedis, ids[withRedis]), http.StatusOK)
	perReq := float64(withRedis.redisCalls()-before) / float64(run.n)

	printTable("(a) steady playback: 16 KiB segments of live session streams", targets, res,
		rate("req/s"), versus("vs plain"), cpu, p50, p99, p99Added,
		column{"store calls per request", func(t *target, _ result) string {
			if t != withRedis {
				return "-"
			}
			return fmt.Sprintf("%.4f", perReq)
		}})
	fmt.Printf("Store calls per request: Redis scripts run during %v of steady playback on the Redis target alone, over its %d requests (%.2f requests per stream per second; renewals every 10s).\n\n",
		long, run.n, run.rps/float64(len(ids[withRedis])))
}

// churn is scenario (b): every request is a new connection-mode stream:
// admit, proxy, release.
func churn(targets []*target) {
	res := measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		return func(rng *rand.Rand) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+"/c/seg.ts", nil)
			req.Header.Set("X-User-Id", "churn-"+strconv.Itoa(rng.IntN(1_000_000)))
			return req
		}, http.StatusOK
	})
	printTable("(b) churn: every request a new connection-mode stream", targets, res,
		rate("req/s"), versus("vs plain"), cpu, p50, p99, p99Added)
}

// denialStorm is scenario (c): users at their limit hammering starts,
// against plain reverse_proxy proxying the same requests.
func denialStorm(targets []*target) {
	const stormUsers = 100
	plain := targets[0]
	for _, t := range targets[1:] {
		for u := range stormUsers {
			for range 3 {
				// Started, and confirmed by a segment (confirm_within).
				user := "storm-" + strconv.Itoa(u)
				t.get("/storm/seg.ts", user, t.get("/storm/index.m3u8", user, ""))
			}
		}
	}
	res := measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		want := http.StatusTooManyRequests
		if t == plain {
			want = http.StatusOK
		}
		return func(rng *rand.Rand) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+"/storm/index.m3u8", nil)
			req.Header.Set("X-User-Id", "storm-"+strconv.Itoa(rng.IntN(stormUsers)))
			return req
		}, want
	})
	printTable("(c) denial storm: users at their limit hammering starts", targets, res,
		rate("answers/s"), versus("vs plain proxying"), cpu, p50, p99)
}

// manifests is scenario (d): players of live streams re-reading their
// media playlist, which the limiter rewrites (every URI gets the stream's
// token) and plain reverse_proxy passes on. Every target gets the same
// requests: a start's tokenized URL, which plain reverse_proxy passes to
// the origin as a query it ignores.
func manifests(targets []*target) {
	for _, n := range strings.Split(*segments, ",") {
		n = strings.TrimSpace(n)
		if _, err := strconv.Atoi(n); err != nil {
			fatalf("-playlist-segments: %q is not a number", n)
		}
		manifestsOf(targets, n)
	}
}

// manifestsOf is scenario (d) for a playlist of n segments.
func manifestsOf(targets []*target, n string) {
	const manifestUsers = 100
	urls := map[*target][]string{}
	user := func(u int) string { return "manifest-" + n + "-" + strconv.Itoa(u) }
	for _, t := range targets[1:] {
		for u := range manifestUsers {
			urls[t] = append(urls[t], t.location("/m/"+n+"/index.m3u8", user(u)))
		}
	}
	urls[targets[0]] = urls[targets[1]]
	res := measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		return func(rng *rand.Rand) *http.Request {
			u := rng.IntN(manifestUsers)
			req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+urls[t][u], nil)
			req.Header.Set("X-User-Id", user(u))
			return req
		}, http.StatusOK
	})
	printTable(fmt.Sprintf("(d) manifests: a %s-segment live media playlist, rewritten for each stream", n), targets, res,
		rate("manifests/s"), versus("vs plain"), cpu, p50, p99, p99Added)
}

// column is one column of a results table: its heading, and its cell for
// a target and the target's result.
type column struct {
	head string
	cell func(*target, result) string
}

func rate(head string) column {
	return column{head, func(_ *target, r result) string { return fmt.Sprintf("%.0f", r.rps) }}
}

// cpu is the CPU time a target's Caddy spent per request, in its median
// round, and plain reverse_proxy's over it: the median and spread of the
// rounds' ratios.
var cpu = column{"Caddy CPU per request; plain's over it (median, min-max)", func(_ *target, r result) string {
	lo, mid, hi := r.cpuRatios[0], r.cpuRatios[len(r.cpuRatios)/2], r.cpuRatios[len(r.cpuRatios)-1]
	return fmt.Sprintf("%.1f µs; %.3fx (%.3f-%.3f)", float64(r.cpuPerReq.Nanoseconds())/1e3, mid, lo, hi)
}}

// versus is the median of a target's per-round ratios to plain
// reverse_proxy, with their least and greatest: the spread is the noise.
func versus(head string) column {
	return column{head + " (median, min-max of rounds)", func(_ *target, r result) string {
		lo, mid, hi := r.ratios[0], r.ratios[len(r.ratios)/2], r.ratios[len(r.ratios)-1]
		return fmt.Sprintf("%.3fx (%.3f-%.3f)", mid, lo, hi)
	}}
}

var (
	p50 = column{"p50", func(_ *target, r result) string { return r.p50.String() }}
	p99 = column{"p99", func(_ *target, r result) string { return r.p99.String() }}
)

// p99Added is a target's p99 less its base's in the same round: the median
// of the rounds, with the least and greatest. (The p99 of one round is of
// a second of requests: a slow spell of the machine moves it more than
// anything the target does, and pairing rounds cancels what it can.)
var p99Added = column{"p99 added (median, min-max of rounds)", func(_ *target, r result) string {
	d := r.p99Added
	if len(d) == 0 {
		return "-"
	}
	return fmt.Sprintf("%v (%v to %v)", d[len(d)/2], d[0], d[len(d)-1])
}}

// printTable prints a scenario's results as a Markdown table, a row per
// target.
func printTable(title string, targets []*target, res map[*target]result, cols ...column) {
	heads := []string{"target"}
	for _, c := range cols {
		heads = append(heads, c.head)
	}
	fmt.Printf("## %s\n\n| %s |\n|%s\n", title, strings.Join(heads, " | "), strings.Repeat("---|", len(heads)))
	for _, t := range targets {
		cells := []string{t.name}
		for _, c := range cols {
			cells = append(cells, c.cell(t, res[t]))
		}
		fmt.Printf("| %s |\n", strings.Join(cells, " | "))
	}
	fmt.Println()
}

// steady makes requests that continue one of the streams ids, at random;
// to a fleet, round-robin over its Caddys.
func steady(t *target, ids []string) func(*rand.Rand) *http.Request {
	var addrs []string
	for _, c := range t.caddys() {
		addrs = append(addrs, c.addr)
	}
	var sent atomic.Uint64
	return func(rng *rand.Rand) *http.Request {
		i := rng.IntN(len(ids))
		addr := addrs[sent.Add(1)%uint64(len(addrs))]
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/s/seg.ts", nil)
		req.Header.Set("X-User-Id", t.steadyUser(i/3))
		if ids[i] != "" {
			req.Header.Set("Stream-Id", ids[i])
		}
		return req
	}
}

// target is one Caddy under test, or the first of a fleet.
type target struct {
	name, site, addr string
	admin            string // the admin address, when profiling
	// redis are clients of the target's Redis, one per node, if it has one.
	redis []*redis.Client
	cmd   *exec.Cmd
	// peers are a fleet's other Caddys, with the same site: the load is
	// spread over them and the target, and their CPU time counts as its.
	peers []*target
	// users prefixes the user ids of its steady streams: "steady-" unless
	// set, for a target that shares its store and must not share its users.
	users string
	// base is the target its ratios are against, when not the first: in
	// the fleet scenario, each pair's single Caddy.
	base *target
}

// caddys are the target's Caddy and its peers.
func (t *target) caddys() []*target { return append([]*target{t}, t.peers...) }

func (t *target) steadyUser(n int) string {
	return cmp.Or(t.users, "steady-") + strconv.Itoa(n)
}

func freeAddr() string {
	addr, err := loopback.FreeAddr()
	if err != nil {
		fatal(err)
	}
	return addr
}

func (t *target) start(dir string) {
	t.addr = freeAddr()
	admin := "off"
	if *profiles != "" {
		t.admin = freeAddr()
		admin = t.admin
	}
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n}\nhttp://%s {\n%s\n}\n", admin, t.addr, t.site)
	file := filepath.Join(dir, strings.NewReplacer(" ", "_", ",", "").Replace(t.name)+".Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		fatal(err)
	}
	t.cmd = exec.Command(*caddyBin, "run", "--config", file)
	if os.Getenv(pinnedEnv) != "" {
		t.cmd = exec.Command("taskset", "-c", "0", *caddyBin, "run", "--config", file)
	}
	t.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	logf, _ := os.Create(file + ".log")
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		fatal(err)
	}
	waitListening(t.addr)
}

func (t *target) stop() {
	if t.cmd == nil || t.cmd.Process == nil {
		return // never started
	}
	t.cmd.Process.Kill()
	t.cmd.Wait()
	for _, c := range t.redis {
		c.Close()
	}
}

var setupClient = &http.Client{Timeout: 30 * time.Second}

// get sends one request and returns the Stream-Id of its answer.
func (t *target) get(path, user, id string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+path, nil)
	req.Header.Set("X-User-Id", user)
	if id != "" {
		req.Header.Set("Stream-Id", id)
	}
	resp, err := setupClient.Do(req)
	if err != nil {
		fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Stream-Id")
}

// location starts a stream at path and returns the tokenized URL (path
// and query) it is redirected to.
func (t *target) location(path, user string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+path, nil)
	req.Header.Set("X-User-Id", user)
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		fatalf("start of %s on %s: %s", path, t.name, resp.Status)
	}
	return loc.RequestURI()
}

// startStreams starts per streams for each of n users ("" ids on plain),
// on the target (a fleet's first Caddy).
func (t *target) startStreams(n, per int) []string {
	ids := make([]string, n*per)
	inParallel(len(ids), func(i int) {
		ids[i] = t.get("/s/index.m3u8", t.steadyUser(i/per), "")
	})
	return ids
}

// inParallel runs fn(0) to fn(n-1), 16 at a time.
func inParallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			fn(i)
			<-sem
		}()
	}
	wg.Wait()
}

// redisCalls counts the scripts the target's Redis has run, over its
// nodes.
func (t *target) redisCalls() int64 {
	var n int64
	for _, client := range t.redis {
		stats, err := client.Info(context.Background(), "commandstats").Result()
		if err != nil {
			fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(stats))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "cmdstat_evalsha:") || strings.HasPrefix(line, "cmdstat_eval:") {
				f := strings.SplitN(strings.SplitN(line, "calls=", 2)[1], ",", 2)[0]
				c, _ := strconv.ParseInt(f, 10, 64)
				n += c
			}
		}
	}
	return n
}

type result struct {
	n        int
	rps      float64
	p50, p99 time.Duration
	// ratios are the rounds' rates over their base's (plain
	// reverse_proxy's) in the same round, in increasing order.
	ratios []float64
	// cpuPerReq is the CPU time (user and system) the Caddy under test
	// spent per request, and cpuRatios plain reverse_proxy's over the
	// target's, round by round, in increasing order: what the machine's
	// neighbours take from a round slows it, but costs it no CPU time.
	cpuPerReq time.Duration
	cpuRatios []float64
	// p99Added are the rounds' p99 less their base's, in increasing order.
	p99Added []time.Duration
}

// measure runs each target *rounds times, interleaved so that drift on a
// shared machine hits every target alike, and keeps each target's median
// round (by requests per second), with the ratios of each of its rounds to
// the same round of its base: the first target (plain reverse_proxy), or
// the one it names (a fleet's single Caddy). Short rounds, many of them,
// each beginning with another target: the speed of a shared (virtual)
// machine wanders by as much as twice within a minute, and a round as long
// as one of its slow spells would read as the target's.
func measure(targets []*target, work func(*target) (func(*rand.Rand) *http.Request, int)) map[*target]result {
	all := map[*target][]result{}
	for round := range *rounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			next, want := work(t)
			var profiled chan struct{}
			if round == *rounds-1 && t.admin != "" {
				profiled = t.profile(*duration - time.Second)
			}
			cpu := t.cpuTime()
			r := load(next, want)
			r.cpuPerReq = (t.cpuTime() - cpu) / time.Duration(max(r.n, 1))
			all[t] = append(all[t], r)
			if profiled != nil {
				<-profiled
			}
		}
	}
	out := map[*target]result{}
	for t, rs := range all {
		var ratios, cpuRatios []float64
		var cpus, added []time.Duration
		for i, r := range rs {
			base := all[cmp.Or(t.base, targets[0])][i]
			ratios = append(ratios, r.rps/base.rps)
			cpuRatios = append(cpuRatios, float64(base.cpuPerReq)/float64(r.cpuPerReq))
			cpus = append(cpus, r.cpuPerReq)
			added = append(added, r.p99-base.p99)
		}
		slices.Sort(ratios)
		slices.Sort(cpuRatios)
		slices.Sort(cpus)
		slices.Sort(added)
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.rps, b.rps) })
		median := rs[len(rs)/2]
		median.ratios, median.cpuRatios, median.cpuPerReq, median.p99Added = ratios, cpuRatios, cpus[len(cpus)/2], added
		out[t] = median
	}
	return out
}

// cpuTime is the CPU time the target's Caddys have spent, user and system
// (Linux: /proc/<pid>/stat; 0 elsewhere).
func (t *target) cpuTime() time.Duration {
	var d time.Duration
	for _, c := range t.caddys() {
		d += processCPU(c.cmd.Process.Pid)
	}
	return d
}

func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's
// times: 100 on Linux everywhere.
const clockTicks = 100

// profile writes a CPU profile of the target over d, from now, and a
// profile of what it allocated over the same time, to -profile's
// directory; the channel is closed when both are written.
func (t *target) profile(d time.Duration) chan struct{} {
	done := make(chan struct{})
	base := filepath.Join(*profiles, scenario+"-"+strings.NewReplacer(" ", "_", ",", "").Replace(t.name))
	var wg sync.WaitGroup
	for kind, suffix := range map[string]string{"profile": ".pprof", "allocs": ".allocs.pprof"} {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", t.admin, kind, int(d.Seconds()))
			if err := saveTo(base+suffix, url); err != nil {
				log.Printf("%s of %s: %v", kind, t.name, err)
			}
		})
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// saveTo writes what url answers to the file name.
func saveTo(name, url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// load runs *workers closed-loop clients for *duration and checks every
// answer has the wanted status.
func load(next func(*rand.Rand) *http.Request, want int) result {
	return loadFor(*duration, next, want)
}

// loadFor is load for a given time.
func loadFor(d time.Duration, next func(*rand.Rand) *http.Request, want int) result {
	tr := &http.Transport{MaxIdleConnsPerHost: *workers, MaxConnsPerHost: *workers}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var bad atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var mine []time.Duration
			for ctx.Err() == nil {
				req := next(rng)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					bad.Add(1)
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	if b := bad.Load(); b > int64(len(lat))/1000 {
		fatalf("%d of %d answers were not %d", b, len(lat), want)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		return lat[int(p*float64(len(lat)-1))].Round(10 * time.Microsecond)
	}
	return result{n: len(lat), rps: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.5), p99: pct(0.99)}
}

// startOrigin serves, for a path /m/<n>/….m3u8, a live media playlist of n
// segments (of 10 for other .m3u8 paths), and a 16 KiB segment for every
// other path.
func startOrigin() string {
	body := make([]byte, 16<<10)
	var mu sync.Mutex
	playlists := map[string]string{}
	playlist := func(path string) string {
		n, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(path, "/m/"), "/", 2)[0])
		if err != nil {
			n = 10
		}
		mu.Lock()
		defer mu.Unlock()
		if p, ok := playlists[path]; ok {
			return p
		}
		// A live playlist (no end): a start is redirected to its tokenized
		// URL, which the player then reads again and again.
		var b strings.Builder
		b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n")
		for i := range n {
			fmt.Fprintf(&b, "#EXTINF:2.000000,\nseg%05d.ts\n", i)
		}
		playlists[path] = b.String()
		return b.String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".m3u8") {
			w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
			io.WriteString(w, playlist(r.URL.Path))
			return
		}
		w.Header().Set("Content-Type", "video/mp2t")
		w.Write(body)
	}))
	return l.Addr().String()
}

func waitListening(addr string) {
	if err := loopback.WaitListening(addr, 60*time.Second); err != nil {
		fatal(err)
	}
}
