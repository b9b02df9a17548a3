// Command bench measures stream_limit against plain reverse_proxy in one
// run: it starts an origin, a redis-server and three Caddy processes (plain
// reverse_proxy; stream_limit on the memory store; stream_limit on Redis),
// drives each with the same load from this process, and prints ratios
// against plain reverse_proxy. Absolute numbers on a shared machine drift;
// the ratios, measured side by side, hold. Run it with `make bench`.
package main

import (
	"bufio"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
)

var (
	caddyBin = flag.String("caddy", "", "the Caddy binary with stream_limit (built by make bench)")
	duration = flag.Duration("duration", 8*time.Second, "how long each measurement runs")
	workers  = flag.Int("workers", 32, "concurrent clients")
	rounds   = flag.Int("rounds", 3, "measurements of each target per scenario, interleaved; the median is reported")
	users    = flag.Int("users", 1000, "users in the steady-playback scenario, 3 streams each")
)

func main() {
	flag.Parse()
	if *caddyBin == "" {
		log.Fatal("-caddy is required")
	}
	dir, err := os.MkdirTemp("", "streamlimit-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	origin := startOrigin()
	redisAddr, stopRedis := startRedis(dir)
	defer stopRedis()

	site := func(store string) string {
		return fmt.Sprintf(`
	route /s/* {
		stream_limit {
			mode session
			zone s
			%[1]s
		}
		reverse_proxy %[2]s
	}
	route /c/* {
		stream_limit {
			zone c
			%[1]s
		}
		reverse_proxy %[2]s
	}
	route /storm/* {
		stream_limit {
			mode session
			zone storm
			lease 1h
			%[1]s
		}
		reverse_proxy %[2]s
	}`, store, origin)
	}
	targets := []*target{
		{name: "plain reverse_proxy", site: "\treverse_proxy " + origin},
		{name: "stream_limit, memory", site: site("")},
		{name: "stream_limit, redis", site: site("store redis {\n\t\t\t\taddress " + redisAddr + "\n\t\t\t}"), redis: redisAddr},
	}
	for _, t := range targets {
		t.start(dir)
		defer t.stop()
	}
	plain := targets[0]

	fmt.Printf("# make bench: %d workers, %v per measurement, %d users x 3 streams, GOMAXPROCS=%s, %s\n\n",
		*workers, *duration, *users, os.Getenv("GOMAXPROCS"), time.Now().UTC().Format(time.RFC3339))

	// (a) steady playback: every request continues one of users x 3 live
	// session streams and fetches a 16 KiB segment.
	fmt.Println("## (a) steady playback: 16 KiB segments of live session streams")
	fmt.Println()
	fmt.Println("| target | req/s | vs plain | p50 | p99 | p99 added | store calls per request |")
	fmt.Println("|---|---|---|---|---|---|---|")
	ids := map[*target][]string{}
	for _, t := range targets {
		ids[t] = t.startStreams(*users, 3)
	}
	res := measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		return steady(t, ids[t]), http.StatusOK
	})
	base := res[plain]
	// Store calls per request in steady playback: the Redis target alone,
	// for long enough that every stream is renewed on its own schedule
	// (interleaved rounds leave streams idle between them, so each round
	// would start with a renewal of every stream).
	redisTarget := targets[2]
	load(steady(redisTarget, ids[redisTarget]), http.StatusOK) // every stream renewed once
	before := redisTarget.redisCalls()
	long := *duration * 4
	steadyRun := loadFor(long, steady(redisTarget, ids[redisTarget]), http.StatusOK)
	perReq := float64(redisTarget.redisCalls()-before) / float64(steadyRun.n)
	for _, t := range targets {
		r := res[t]
		calls := "-"
		if t == redisTarget {
			calls = fmt.Sprintf("%.4f", perReq)
		}
		fmt.Printf("| %s | %.0f | %.3fx | %v | %v | %v | %s |\n", t.name, r.rps, r.rps/base.rps, r.p50, r.p99, r.p99-base.p99, calls)
	}
	fmt.Printf("\nStore calls per request: Redis scripts run during %v of steady playback on the Redis target alone, over its %d requests (%.2f requests per stream per second; renewals every 10s).\n",
		long, steadyRun.n, steadyRun.rps/float64(len(ids[redisTarget])))
	fmt.Println()

	// (b) churn: every request is a new connection-mode stream: admit,
	// proxy, release.
	fmt.Println("## (b) churn: every request a new connection-mode stream")
	fmt.Println()
	fmt.Println("| target | req/s | vs plain | p50 | p99 | p99 added |")
	fmt.Println("|---|---|---|---|---|---|")
	res = measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		return func(rng *rand.Rand) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+"/c/seg.ts", nil)
			req.Header.Set("X-User-Id", "churn-"+strconv.Itoa(rng.IntN(1_000_000)))
			return req
		}, http.StatusOK
	})
	base = res[plain]
	for _, t := range targets {
		r := res[t]
		fmt.Printf("| %s | %.0f | %.3fx | %v | %v | %v |\n", t.name, r.rps, r.rps/base.rps, r.p50, r.p99, r.p99-base.p99)
	}
	fmt.Println()

	// (c) denial storm: users at their limit hammering starts; compared with
	// plain reverse_proxy proxying the same requests.
	fmt.Println("## (c) denial storm: users at their limit hammering starts")
	fmt.Println()
	fmt.Println("| target | answers/s | vs plain proxying | p50 | p99 |")
	fmt.Println("|---|---|---|---|---|")
	const stormUsers = 100
	for _, t := range targets[1:] {
		for u := range stormUsers {
			for range 3 {
				t.get("/storm/index.m3u8", "storm-"+strconv.Itoa(u), "")
			}
		}
	}
	res = measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
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
	base = res[plain]
	for _, t := range targets {
		r := res[t]
		fmt.Printf("| %s | %.0f | %.3fx | %v | %v |\n", t.name, r.rps, r.rps/base.rps, r.p50, r.p99)
	}
	fmt.Println()
}

// steady makes requests that continue one of the streams ids, at random.
func steady(t *target, ids []string) func(*rand.Rand) *http.Request {
	return func(rng *rand.Rand) *http.Request {
		i := rng.IntN(len(ids))
		req, _ := http.NewRequest(http.MethodGet, "http://"+t.addr+"/s/seg.ts", nil)
		req.Header.Set("X-User-Id", "steady-"+strconv.Itoa(i/3))
		if ids[i] != "" {
			req.Header.Set("Stream-Id", ids[i])
		}
		return req
	}
}

// target is one Caddy under test.
type target struct {
	name, site, addr, redis string
	cmd                     *exec.Cmd
}

func freeAddr() string {
	addr, err := loopback.FreeAddr()
	if err != nil {
		log.Fatal(err)
	}
	return addr
}

func (t *target) start(dir string) {
	t.addr = freeAddr()
	cfg := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\nhttp://%s {\n%s\n}\n", t.addr, t.site)
	file := filepath.Join(dir, strings.NewReplacer(" ", "_", ",", "").Replace(t.name)+".Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		log.Fatal(err)
	}
	t.cmd = exec.Command(*caddyBin, "run", "--config", file)
	t.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
	logf, _ := os.Create(file + ".log")
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		log.Fatal(err)
	}
	waitListening(t.addr)
}

func (t *target) stop() {
	t.cmd.Process.Kill()
	t.cmd.Wait()
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
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Stream-Id")
}

// startStreams starts per streams for each of n users ("" ids on plain).
func (t *target) startStreams(n, per int) []string {
	ids := make([]string, n*per)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			ids[i] = t.get("/s/index.m3u8", "steady-"+strconv.Itoa(i/per), "")
			<-sem
		}()
	}
	wg.Wait()
	return ids
}

// redisCalls counts the scripts Redis has run.
func (t *target) redisCalls() int64 {
	if t.redis == "" {
		return 0
	}
	out, err := exec.Command("redis-cli", "-h", strings.Split(t.redis, ":")[0], "-p", strings.Split(t.redis, ":")[1], "INFO", "commandstats").Output()
	if err != nil {
		log.Fatal(err)
	}
	var n int64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "cmdstat_evalsha:") || strings.HasPrefix(line, "cmdstat_eval:") {
			f := strings.SplitN(strings.SplitN(line, "calls=", 2)[1], ",", 2)[0]
			c, _ := strconv.ParseInt(f, 10, 64)
			n += c
		}
	}
	return n
}

type result struct {
	n        int
	total    int // requests over every round
	rps      float64
	p50, p99 time.Duration
}

// measure runs each target *rounds times, interleaved so that drift on a
// shared machine hits every target alike, and keeps each target's median
// round (by requests per second).
func measure(targets []*target, work func(*target) (func(*rand.Rand) *http.Request, int)) map[*target]result {
	all := map[*target][]result{}
	for range *rounds {
		for _, t := range targets {
			next, want := work(t)
			all[t] = append(all[t], load(next, want))
		}
	}
	out := map[*target]result{}
	for t, rs := range all {
		total := 0
		for _, r := range rs {
			total += r.n
		}
		slices.SortFunc(rs, func(a, b result) int { return int(a.rps - b.rps) })
		m := rs[len(rs)/2]
		m.total = total
		out[t] = m
	}
	return out
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
		log.Fatalf("%d of %d answers were not %d", b, len(lat), want)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		return lat[int(p*float64(len(lat)-1))].Round(10 * time.Microsecond)
	}
	return result{n: len(lat), rps: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.5), p99: pct(0.99)}
}

// startOrigin serves a 16 KiB segment for every path.
func startOrigin() string {
	body := make([]byte, 16<<10)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp2t")
		w.Write(body)
	}))
	return l.Addr().String()
}

func startRedis(dir string) (string, func()) {
	addr := freeAddr()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		log.Fatal("redis-server: ", err)
	}
	waitListening(addr)
	return addr, func() { cmd.Process.Kill(); cmd.Wait() }
}

func waitListening(addr string) {
	if err := loopback.WaitListening(addr, 60*time.Second); err != nil {
		log.Fatal(err)
	}
}
