package caddymodule

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
)

func redisSite(addr, extra string) string {
	return fmt.Sprintf(`
	route /r/* {
		stream_limit {
			lease 2s
			list_path /r/streams
			%s
			store redis {
				address %s
				timeout 300ms
			}
		}
		reverse_proxy {upstream}
	}
	route /deny/* {
		stream_limit {
			zone deny
			mode session
			on_store_error deny
			store redis {
				address %s
				timeout 300ms
			}
		}
		reverse_proxy {upstream}
	}`, extra, addr, addr)
}

func TestRedisStoreThroughCaddy(t *testing.T) {
	srv := redistest.Start(t)
	p := startCaddy(t, redisSite(srv.Addr, ""))

	var live []*liveStream
	for range 3 {
		s := p.open("/r/slow/v.ts", "alice")
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("start: %s", s.resp.Status)
		}
		live = append(live, s)
	}
	if r, body := p.do(http.MethodGet, "/r/v.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth start: %s %s", r.Status, body)
	}
	if n := len(p.listed("/r/streams", "alice")); n != 3 {
		t.Fatalf("Redis lists %d streams, want 3", n)
	}
	live[0].cancel()
	eventually(t, "a departed client's slot is freed in Redis", func() bool { return len(p.listed("/r/streams", "alice")) == 2 })
}

func TestRedisOutageAndRecovery(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = time.Second
	p := startCaddy(t, strings.Replace(redisSite(srv.Addr, ""), "timeout 300ms", "timeout 1s", -1))
	baseline := runtime.NumGoroutine()

	var live []*liveStream
	for range 3 {
		live = append(live, p.open("/r/slow/v.ts", "alice"))
	}

	// Redis hangs, then dies. on_store_error allow: starts pass (logged);
	// deny: 503. Either way a request waits at most the store timeout:
	// storeBounded checks it. While Redis hangs, every call runs into the
	// timeout; once it is dead, calls fail at once.
	srv.Freeze()
	for range 2 {
		storeBounded(t, p, "/r/x.ts", "alice", http.StatusOK, timeout)
		storeBounded(t, p, "/deny/x.ts", "alice", http.StatusServiceUnavailable, timeout)
	}
	srv.Kill()
	for range 2 {
		storeBounded(t, p, "/r/x.ts", "alice", http.StatusOK, timeout)
		storeBounded(t, p, "/deny/x.ts", "alice", http.StatusServiceUnavailable, timeout)
	}
	for i, s := range live {
		select {
		case err := <-s.done:
			t.Fatalf("live stream %d was cut by the outage: %v", i, err)
		default:
		}
	}

	// Redis comes back empty: the live streams' keepalives put their leases
	// back at their next renewals, and the limit holds again without
	// restarting Caddy. The bound is the 2 s lease (the keepalives renew
	// every 667 ms; after failed dials the Redis client tries once a second)
	// plus 2 s of slack.
	srv.Restart(t)
	back := time.Now()
	for {
		resp, body := p.do(http.MethodGet, "/r/streams", "alice")
		if resp.StatusCode == http.StatusOK && strings.Count(body, `"id"`) == 3 {
			break
		}
		if time.Since(back) > 4*time.Second {
			t.Fatalf("4 s after Redis came back, alice's live streams are not counted again: %s %s", resp.Status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the live streams were counted again %v after Redis came back", time.Since(back).Round(10*time.Millisecond))
	if r, _ := p.do(http.MethodGet, "/r/v.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth start after recovery: %s, want 429", r.Status)
	}
	if r, _ := p.do(http.MethodGet, "/deny/v.m3u8", "bob"); r.StatusCode != http.StatusOK {
		t.Fatalf("deny zone after recovery: %s", r.Status)
	}
	for _, s := range live {
		s.cancel()
	}
	eventually(t, "every slot is freed after recovery", func() bool { return len(p.listed("/r/streams", "alice")) == 0 })
	// Nothing of the outage is left running: no goroutine of the limiter's
	// own but the zones' loops, and no pile of others. (Caddy keeps idle
	// connections to the origin, a few goroutines each, so the total is
	// only bounded loosely.)
	var left []string
	defer func() {
		if t.Failed() {
			t.Logf("%d goroutines (baseline %d); the limiter's:\n%s", runtime.NumGoroutine(), baseline, strings.Join(left, "\n\n"))
		}
	}()
	eventually(t, fmt.Sprintf("goroutines back near %d", baseline), func() bool {
		client.CloseIdleConnections()
		left = limiterGoroutines()
		return len(left) == 0 && runtime.NumGoroutine() <= baseline+10
	})
}

// limiterGoroutines returns the stacks of goroutines running this
// package's code, other than each zone's release and sweep loops.
func limiterGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		running, _, _ := strings.Cut(g, "\ncreated by ") // where it runs, not who started it
		if strings.Contains(running, "caddy-streamlimit/caddymodule.") &&
			!strings.Contains(g, "caddymodule.(*zone).releaseLoop") &&
			!strings.Contains(g, "caddymodule.(*zone).forgetIdleEvery") &&
			!strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return out
}

func TestRedisCaddyfileOptions(t *testing.T) {
	t.Setenv("TEST_REDIS_PASSWORD", "s3cret")
	cfg, _, err := caddyAdapt(`http://localhost:8080 {
	stream_limit {
		store redis {
			address 10.0.0.1:6379 10.0.0.2:6379
			address 10.0.0.3:6379
			username limiter
			password {env.TEST_REDIS_PASSWORD}
			db 2
			master_name mymaster
			sentinel_username sentry
			sentinel_password {env.TEST_REDIS_PASSWORD}
			tls {
				server_name redis.internal
				ca /etc/ssl/redis-ca.pem
				insecure_skip_verify
			}
			key_prefix sl:
			timeout 250ms
			pool_size 40
		}
	}
	reverse_proxy localhost:8081
}`)
	if err != nil {
		t.Fatal(err)
	}
	want := `"store":{"addresses":["10.0.0.1:6379","10.0.0.2:6379","10.0.0.3:6379"],"db":2,"key_prefix":"sl:","master_name":"mymaster","password":"{env.TEST_REDIS_PASSWORD}","pool_size":40,"sentinel_password":"{env.TEST_REDIS_PASSWORD}","sentinel_username":"sentry","timeout":250000000,"tls":{"ca":"/etc/ssl/redis-ca.pem","insecure_skip_verify":true,"server_name":"redis.internal"},"type":"redis","username":"limiter"}`
	if !strings.Contains(string(cfg), want) {
		t.Fatalf("adapted store:\n%s\nwant it to contain\n%s", cfg, want)
	}
	var r RedisStore
	r.Password, r.Addresses = "{env.TEST_REDIS_PASSWORD}", []string{"{env.TEST_REDIS_HOST}:6379"}
	t.Setenv("TEST_REDIS_HOST", "cache")
	if err := r.Provision(ctxForTest()); err != nil {
		t.Fatal(err)
	}
	if r.Password != "s3cret" || r.Addresses[0] != "cache:6379" || r.Timeout != 0 && time.Duration(r.Timeout) != DefaultRedisTimeout {
		t.Fatalf("env placeholders not expanded: %+v", r)
	}

	for _, c := range []struct{ body, want string }{
		{"db two", "db:"},
		{"timeout soon", "timeout:"},
		{"timeout 0s", "timeout:"},
		{"pool_size many", "pool_size:"},
		{"colour blue", `unrecognized option "colour"`},
		{"password", "password: want one value"},
		{"address", "address: want host:port"},
		{"tls {\n\t\t\tcolour blue\n\t\t}", `tls: unrecognized option "colour"`},
	} {
		_, _, err := caddyAdapt("http://localhost:8080 {\n\tstream_limit {\n\t\tstore redis {\n\t\t\t" + c.body + "\n\t\t}\n\t}\n}\n")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("store redis { %s }: %v, want an error containing %q", c.body, err, c.want)
		}
	}
	for _, c := range []struct{ json, want string }{
		{`{"type":"redis","key_prefix":"a}b"}`, "key_prefix"},
		{`{"type":"redis","addresses":["{env.TEST_UNSET_VAR}"]}`, "address"},
		{`{"type":"redis","tls":{"cert":"c.pem"}}`, "cert and key"},
	} {
		cfg := `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"stream_limit","store":` + c.json + `}]}]}}}}}`
		if err := validateConfig(t, cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.json, err, c.want)
		}
	}
}

// TestStreamContinuedThroughAnOutageKeepsItsUserLimit: a stream that an
// instance first sees while the store is down (it cannot check the id, so
// on_store_error allow serves it) is held to its user's own limit when its
// keepalive puts the lease back, not to the default. Here the user's limit
// is 1: once Redis is back (empty), one of the user's two streams served
// meanwhile gets the slot and the other is cut.
func TestStreamContinuedThroughAnOutageKeepsItsUserLimit(t *testing.T) {
	srv := redistest.Start(t)
	site := func(timeout string) string {
		return fmt.Sprintf(`
	route /l/* {
		stream_limit {
			zone outage
			mode session
			limit 1
			lease 2s
			list_path /l/streams
			store redis {
				address %s
				timeout %s
			}
		}
		reverse_proxy {upstream}
	}`, srv.Addr, timeout)
	}
	p := startCaddy(t, site("300ms"))
	earlier := p.start("/l/index.m3u8", "gina")
	srv.Kill()
	// A store config that differs only in its timeout is another zone
	// here, one that has never read the id secret: as an instance that
	// started during the outage.
	p.reload(site("250ms"))
	continued := p.open("/l/slow/a.ts", "gina", StreamIDHeader, earlier)
	started := p.open("/l/slow/b.ts", "gina")
	for _, s := range []*liveStream{continued, started} {
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("during the outage (allow): %s", s.resp.Status)
		}
	}
	// Which stream's keepalive reaches Redis first is up to timing; the
	// terms each will renew with are not.
	zones.Range(func(k, v any) bool {
		if z := v.(*zone); z.name == "outage" && z.storeTimeout == 250*time.Millisecond {
			ls := z.lookup(streamRef{lease.Key{Zone: "outage", User: "gina"}, earlier})
			if ls == nil {
				t.Fatal("the continued stream has no local state")
			}
			ls.mu.Lock()
			limit := ls.terms.limit
			ls.mu.Unlock()
			if limit != 1 {
				t.Fatalf("the continued stream will renew under limit %d, want the user's 1", limit)
			}
		}
		return true
	})
	srv.Restart(t)
	cut := 0
	eventually(t, "one of the two streams is cut once Redis is back", func() bool {
		for _, s := range []*liveStream{continued, started} {
			select {
			case <-s.done:
				cut++
			default:
			}
		}
		return cut > 0
	})
	if cut != 1 {
		t.Fatalf("%d of the user's 2 streams were cut, want 1 (limit 1)", cut)
	}
	if l := p.listed("/l/streams", "gina"); len(l) != 1 {
		t.Fatalf("after the outage the user holds %d streams, want 1 (limit 1)", len(l))
	}
}

// TestALostSlotIsFoundBesideTheRequest: Redis loses a playing stream's
// lease (its key is gone, as after a restart without persistence) and
// another stream of the user takes the only slot. The stream's request
// whose renewal is due is still served, its lease running here; the
// renewal beside it finds the slot taken, and the stream's next request
// is refused at the limit rather than served again on its old lease.
func TestALostSlotIsFoundBesideTheRequest(t *testing.T) {
	srv := redistest.Start(t)
	p := startCaddy(t, fmt.Sprintf(`
	route /lost/* {
		stream_limit {
			zone lost
			mode session
			limit 1
			lease 3s
			store redis {
				address %s
			}
		}
		reverse_proxy {upstream}
	}`, srv.Addr))
	id := p.start("/lost/index.m3u8", "hana")
	// Media confirms it; the confirmation's renewal has time to finish.
	if r, body := p.do(http.MethodGet, "/lost/seg.ts", "hana", StreamIDHeader, id); r.StatusCode != http.StatusOK {
		t.Fatalf("first segment: %s %s", r.Status, body)
	}
	time.Sleep(300 * time.Millisecond)
	tag := base64.RawURLEncoding.EncodeToString([]byte("lost")) + "." + base64.RawURLEncoding.EncodeToString([]byte("hana"))
	if _, err := srv.Do("DEL", lease.DefaultKeyPrefix+"{"+tag+"}:l"); err != nil {
		t.Fatal(err)
	}
	if other := p.start("/lost/index.m3u8", "hana"); other == id {
		t.Fatal("the other start continued the stream")
	}

	time.Sleep(1100 * time.Millisecond) // past the 1 s renewal interval
	before := p.storeCalls("lost")
	if r, body := p.do(http.MethodGet, "/lost/seg.ts", "hana", StreamIDHeader, id); r.StatusCode != http.StatusOK {
		t.Fatalf("the segment whose renewal is due: %s %s", r.Status, body)
	}
	// Its renewal (a Renew that finds nothing, then a refused Acquire).
	for deadline := time.Now().Add(10 * time.Second); p.storeCalls("lost") < before+2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the renewal beside the segment made %v store calls in 10 s, want 2", p.storeCalls("lost")-before)
		}
	}
	if r, body := p.do(http.MethodGet, "/lost/seg.ts", "hana", StreamIDHeader, id); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the next segment of the stream that lost its slot: %s %s, want 429", r.Status, body)
	}
}
