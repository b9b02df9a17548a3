package main

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// callsWindow is how long each limited target of the fleet scenario runs
// alone while its Redis calls are counted: two renewal intervals (a third
// of the default 30 s lease).
const callsWindow = 20 * time.Second

// fleet is scenario (e): steady playback, as in (a), by one Caddy with
// stream_limit and by a fleet of 3 with the same config, both on one Redis
// Cluster of 3 masters, and in the same rounds by one plain reverse_proxy
// and by 3.
// A fleet gets its requests round-robin, as a plain load balancer sends
// them: every Caddy of it serves every stream and renews its lease on its
// own schedule, the limiter's worst case (a balancer that hashed users to
// Caddys would keep a stream's renewals on one). Pinned, every Caddy under
// test shares core 0: the ratios say what a fleet costs per request, not
// whether it scales, which three processes on one core cannot show. Plain
// reverse_proxy's pair is the control: what 3 processes on one core cost
// with no limiter.
func fleet(dir, origin string) {
	cluster, err := redistest.LaunchCluster(filepath.Join(dir, "cluster"))
	if err != nil {
		fatal(err)
	}
	atExit = append(atExit, cluster.Kill)
	store := "store redis {\n\t\t\t\taddress " + strings.Join(cluster.Addrs(), " ") + "\n\t\t\t}"
	limited := startFleetPair(dir, "stream_limit", siteFor(true, store, origin), cluster.Addrs())
	plain := startFleetPair(dir, "plain reverse_proxy", siteFor(false, "", origin), nil)

	targets := append(limited, plain...)
	ids := map[*target][]string{}
	for _, t := range targets {
		ids[t] = t.startStreams(*users, 3)
		// Every Caddy serves every stream a segment before the rounds: the
		// first segment confirms the stream where it started, and the
		// fleet's other Caddys check its id and renew it, as round-robin
		// soon has them do.
		for _, c := range t.caddys() {
			inParallel(len(ids[t]), func(i int) { c.get("/s/seg.ts", t.steadyUser(i/3), ids[t][i]) })
		}
	}
	res := measure(targets, func(t *target) (func(*rand.Rand) *http.Request, int) {
		return steady(t, ids[t]), http.StatusOK
	})
	// The Redis calls of each limited target alone, per request and per
	// stream and second: renewals come with time, not with requests.
	calls := map[*target]string{}
	for _, t := range limited {
		before := t.redisCalls()
		run := loadFor(callsWindow, steady(t, ids[t]), http.StatusOK)
		n := float64(t.redisCalls() - before)
		calls[t] = fmt.Sprintf("%.4f; %.3f", n/float64(run.n), n/float64(len(ids[t]))/callsWindow.Seconds())
	}

	vsOne := cpu
	vsOne.head = "Caddy CPU per request (a fleet's 3 summed); 1 Caddy's over it (median, min-max)"
	printTable("(e) fleet: steady playback by 3 Caddys against 1, over a Redis Cluster of 3 masters", targets, res,
		rate("req/s"), versus("vs 1 Caddy of its kind"), vsOne, p50, p99,
		column{"Redis calls per request; per stream per second", func(t *target, _ result) string { return cmp.Or(calls[t], "-") }})
	fmt.Printf("The limited targets share one Cluster of 3 masters, each with users of its own; a fleet gets its requests round-robin. Pinned, a fleet's 3 Caddys share core 0, the one core every Caddy under test gets: the ratios say what a fleet costs per request, not how it scales, which this machine cannot show; plain reverse_proxy's pair shows what 3 processes on one core cost without the limiter. Redis calls: the scripts the 3 masters ran during %v of steady playback on each limited target alone (every Caddy renews each stream it serves every 10 s).\n\n",
		callsWindow)
}

// startFleetPair starts one Caddy with site, and a fleet of 3 with it,
// each with users of its own; both have their ratios against the one.
// With Redis, clients of its nodes count the calls.
func startFleetPair(dir, kind, site string, redisNodes []string) []*target {
	nodeClients := func() []*redis.Client {
		var cs []*redis.Client
		for _, addr := range redisNodes {
			cs = append(cs, redis.NewClient(&redis.Options{Addr: addr}))
		}
		return cs
	}
	one := &target{name: kind + ", 1 Caddy", site: site, redis: nodeClients(), users: "one-"}
	one.base = one
	three := &target{name: kind + ", 3 Caddys", site: site, redis: nodeClients(), users: "three-", base: one}
	for i := 2; i <= 3; i++ {
		three.peers = append(three.peers, &target{name: fmt.Sprintf("%s (%d of 3)", three.name, i), site: site})
	}
	for _, t := range append(three.caddys(), one) {
		atExit = append(atExit, t.stop)
		t.start(dir)
	}
	return []*target{one, three}
}
