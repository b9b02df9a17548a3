package caddymodule

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
)

// These tests check claims of docs/GUARANTEES.md and docs/BENCHMARKS.md
// that no other test asserts.

// TestDocsCiteTestsThatExist: every test, fuzz test and benchmark that
// docs/GUARANTEES.md and docs/BENCHMARKS.md name is in the code, so that
// renaming or deleting one leaves no guarantee citing nothing.
func TestDocsCiteTestsThatExist(t *testing.T) {
	defined := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range testFunc.FindAllStringSubmatch(string(b), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"../docs/GUARANTEES.md", "../docs/BENCHMARKS.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		cited := citedTest.FindAllStringSubmatch(string(b), -1)
		if len(cited) == 0 {
			t.Fatalf("%s cites no test", doc)
		}
		for _, m := range cited {
			if !defined[m[1]] {
				t.Errorf("%s cites %s, which no _test.go file defines", doc, m[1])
			}
		}
	}
}

var (
	testFunc  = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)\w+)\(`)
	citedTest = regexp.MustCompile("`((?:Test|Fuzz|Benchmark)\\w+)`")
)

const guaranteesSite = `
	route /lapse/* {
		stream_limit {
			zone lapse
			mode session
			limit 1
			lease 3s
			list_path /lapse/streams
		}
		reverse_proxy {upstream}
	}
	route /gated/* {
		stream_limit {
			zone gated
			lease 3s
			list_path /gated/streams
			store gated_test
		}
		reverse_proxy {upstream}
	}
	route /gatedsession/* {
		stream_limit {
			zone gatedsession
			mode session
			lease 3s
			list_path /gatedsession/streams
			store gated_test
		}
		reverse_proxy {upstream}
	}
	route /coalesce/* {
		stream_limit {
			zone coalesce
			mode session
			lease 30s
		}
		reverse_proxy {upstream}
	}`

// TestLapsedStreamLosesItsLiveRequest: a session stream's lease lapses
// while one of its requests is still streaming (the store's clock is moved
// past the lease before the keepalive renews it), and another start takes
// the only slot. The live request is cut at the keepalive's next renewal,
// and the stream's next request is refused as at the limit.
func TestLapsedStreamLosesItsLiveRequest(t *testing.T) {
	p := startCaddy(t, guaranteesSite)
	lapsed := p.start("/lapse/index.m3u8", "carol")
	live := p.open("/lapse/slow/seg.ts", "carol", StreamIDHeader, lapsed)
	if live.resp.StatusCode != http.StatusOK {
		t.Fatalf("live request of the stream: %s", live.resp.Status)
	}

	// The keepalive renews on a real 1 s timer; if it runs between the
	// clock's move and the start, it re-admits the lapsed stream first (its
	// slot is free), the start is refused, and the test moves on again.
	var taker string
	for attempt := 0; taker == ""; attempt++ {
		if attempt == 10 {
			t.Fatal("the keepalive re-admitted the lapsed stream before every start")
		}
		advance(t, 10*time.Second)
		resp, body := p.do(http.MethodGet, "/lapse/index.m3u8", "carol")
		switch resp.StatusCode {
		case http.StatusOK:
			taker = resp.Header.Get(StreamIDHeader)
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("start while the stream's lease has lapsed: %s %s", resp.Status, body)
		}
	}
	took := time.Now()

	// The next renewal is due within one renewal interval (1 s); 5 s leaves
	// room for a loaded machine. Left uncut, the request would stream on.
	select {
	case <-live.done:
		t.Logf("the lapsed stream's live request was cut %v after its slot was taken", time.Since(took).Round(10*time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the lapsed stream's live request still streams 5 s after another start took its slot (renewal every 1 s)")
	}
	if r, body := p.do(http.MethodGet, "/lapse/seg.ts", "carol", StreamIDHeader, lapsed); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the lapsed stream's next request: %s %s, want 429", r.Status, body)
	}
	if l := p.listed("/lapse/streams", "carol"); len(l) != 1 || l[0].(map[string]any)["id"] != taker {
		t.Fatalf("streams held: %v, want only the one that took the slot (%s)", l, taker)
	}
}

// storeCalls is how many calls the zone's store has answered, of any
// operation, read from the store latency histogram's counts.
func (p *proxy) storeCalls(zone string) float64 {
	p.t.Helper()
	var n float64
	for series, v := range p.scrape() {
		if strings.HasPrefix(series, "caddy_stream_limit_store_duration_seconds_count{") && strings.Contains(series, `zone="`+zone+`"`) {
			n += v
		}
	}
	return n
}

// TestRenewalsAreCoalesced: three session streams, each fetching a segment
// every second of the store's clock for six renewal intervals (lease 30 s,
// renewal every 10 s), make at most one store call per stream per renewal
// interval, not one per request.
func TestRenewalsAreCoalesced(t *testing.T) {
	p := startCaddy(t, guaranteesSite)
	var ids []string
	for range 3 {
		ids = append(ids, p.start("/coalesce/index.m3u8", "dora"))
	}
	before := p.storeCalls("coalesce")
	if before < 3 {
		t.Fatalf("the three starts counted %v store calls: the histogram is not read", before)
	}

	const renewal, intervals, perInterval = 10 * time.Second, 6, 10
	began := time.Now()
	for range intervals * perInterval {
		advance(t, renewal/perInterval)
		for _, id := range ids {
			if r, body := p.do(http.MethodGet, "/coalesce/seg.ts", "dora", StreamIDHeader, id); r.StatusCode != http.StatusOK {
				t.Fatalf("segment of a live stream: %s %s", r.Status, body)
			}
		}
	}
	calls := p.storeCalls("coalesce") - before
	// A keepalive runs on a real-time timer (every 10 s) and renews when it
	// finds a request in flight: one more call per stream per 10 s of the
	// test's real duration.
	real := int(time.Since(began) / renewal)
	bound := float64(len(ids) * (intervals + real + 1))
	t.Logf("%d requests over %d renewal intervals: %v store calls (bound %v)", len(ids)*intervals*perInterval, intervals, calls, bound)
	if calls > bound {
		t.Fatalf("%v store calls for %d streams over %d renewal intervals, %d requests each: want at most %v (one per stream per interval)",
			calls, len(ids), intervals, intervals*perInterval, bound)
	}
	if calls < float64(len(ids)) {
		t.Fatalf("%v store calls over %d renewal intervals: the leases were not renewed", calls, intervals)
	}
	if r, _ := p.do(http.MethodGet, "/coalesce/index.m3u8", "dora"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a fourth start after %d renewal intervals: %s, want 429 (the three leases were renewed)", intervals, r.Status)
	}
}

// TestRenewalUnderWayWhenTheStreamEnds: a connection-mode stream ends (its
// client leaves) while its keepalive's renewal is held in the store. A
// renewal that answered after the stream's release would find the lease
// gone and take the slot back for a stream that no longer exists, until
// the lease lapsed: once the renewal has answered and the stream has been
// released, the user must hold nothing.
func TestRenewalUnderWayWhenTheStreamEnds(t *testing.T) {
	g := newRenewGate()
	gate.Store(g)
	t.Cleanup(func() { gate.Store(nil) })
	p := startCaddy(t, guaranteesSite)
	s := p.open("/gated/slow/v.ts", "erin")
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("start: %s", s.resp.Status)
	}
	wait := func(c chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatalf("waited 10 s for %s", what)
		}
	}
	wait(g.entered, "the live stream's renewal (every 1 s)")
	s.cancel()
	// A second for the stream's end to reach the store's release, if it
	// does not wait for the renewal; then the renewal answers.
	select {
	case <-g.released:
		t.Log("released while the renewal was under way")
	case <-time.After(time.Second):
	}
	close(g.proceed)
	wait(g.answered, "the renewal's answer")
	wait(g.released, "the ended stream's release")
	// Over half the lease, the user holds nothing: a slot taken back would
	// be held until the lease lapsed.
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if l := p.listed("/gated/streams", "erin"); len(l) != 0 {
			t.Fatalf("after the stream ended and was released, the user holds %v", l)
		}
	}
}

// TestAContinuationDoesNotWaitOnTheStore: a session stream's request that
// finds its renewal due while its lease still runs is served while the
// store holds that renewal; the renewal, let go, keeps the stream.
func TestAContinuationDoesNotWaitOnTheStore(t *testing.T) {
	p := startCaddy(t, guaranteesSite)
	id := p.start("/gatedsession/index.m3u8", "gina")
	// Media confirms the start (confirm_within); its renewal is not held.
	if r, body := p.do(http.MethodGet, "/gatedsession/seg.ts", "gina", StreamIDHeader, id); r.StatusCode != http.StatusOK {
		t.Fatalf("first segment: %s %s", r.Status, body)
	}
	g := newRenewGate()
	gate.Store(g)
	t.Cleanup(func() { gate.Store(nil) })

	// Segments, until one finds the renewal due (every 1 s) and the store
	// holds it: each must be answered meanwhile.
	for renewing := false; !renewing; {
		got := make(chan string, 1)
		go func() {
			r, body := p.do(http.MethodGet, "/gatedsession/seg.ts", "gina", StreamIDHeader, id)
			got <- r.Status + " " + body
		}()
		select {
		case status := <-got:
			if !strings.HasPrefix(status, "200") {
				t.Fatalf("segment: %s", status)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a segment waited 10 s while the store held its stream's renewal")
		}
		select {
		case <-g.entered:
			renewing = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	// One more while the store still holds it.
	if r, body := p.do(http.MethodGet, "/gatedsession/seg.ts", "gina", StreamIDHeader, id); r.StatusCode != http.StatusOK {
		t.Fatalf("segment during the renewal: %s %s", r.Status, body)
	}
	close(g.proceed)
	select {
	case <-g.answered:
	case <-time.After(10 * time.Second):
		t.Fatal("waited 10 s for the renewal's answer")
	}
	if l := p.listed("/gatedsession/streams", "gina"); len(l) != 1 {
		t.Fatalf("after the renewal, the user holds %v, want the one stream", l)
	}
}

// gate is the renewGate of the running test, if any.
var gate atomic.Pointer[renewGate]

// renewGate holds the first renewal in the store until the test lets it
// proceed, and tells the test when that renewal has answered and when a
// release has reached the store.
type renewGate struct {
	entered, proceed, answered, released chan struct{}
	renewOnce, releaseOnce               sync.Once
}

func newRenewGate() *renewGate {
	return &renewGate{entered: make(chan struct{}), proceed: make(chan struct{}), answered: make(chan struct{}), released: make(chan struct{})}
}

// gatedStore is the memory store behind a renewGate.
type gatedStore struct{ lease.Store }

func (s gatedStore) Renew(ctx context.Context, key lease.Key, id string, ttl time.Duration) (lease.Lease, error) {
	g := gate.Load()
	if g == nil {
		return s.Store.Renew(ctx, key, id, ttl)
	}
	held := false
	g.renewOnce.Do(func() { held = true })
	if !held {
		return s.Store.Renew(ctx, key, id, ttl)
	}
	close(g.entered)
	<-g.proceed
	defer close(g.answered)
	return s.Store.Renew(ctx, key, id, ttl)
}

func (s gatedStore) Release(ctx context.Context, key lease.Key, id string) error {
	err := s.Store.Release(ctx, key, id)
	if g := gate.Load(); g != nil {
		g.releaseOnce.Do(func() { close(g.released) })
	}
	return err
}

func init() { caddy.RegisterModule(GatedStore{}) }

// GatedStore is the store module of gatedStore, for tests only:
// "store gated_test".
type GatedStore struct{}

func (GatedStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "stream_limit.stores.gated_test", New: func() caddy.Module { return new(GatedStore) }}
}

func (GatedStore) Identity() string { return "gated_test" }

func (GatedStore) Open(onExpire func(lease.Key, lease.Lease)) (lease.Store, error) {
	return gatedStore{lease.NewMemoryStore(lease.MemoryOptions{Clock: now, OnExpire: onExpire})}, nil
}

func (GatedStore) CallTimeout() time.Duration { return 0 }

func (*GatedStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

// TestConcurrentRequestsShareOneRenewal: a stream's requests that arrive
// together when its renewal is due (audio beside video, prefetches) make one
// store call between them, not one each. Redis answers 50 ms late here, so
// that they do overlap the renewal under way.
func TestConcurrentRequestsShareOneRenewal(t *testing.T) {
	srv := redistest.Start(t)
	slow := startSlowProxy(t, srv.Addr)
	p := startCaddy(t, fmt.Sprintf(`
	route /together/* {
		stream_limit {
			zone together
			mode session
			lease 3s
			store redis {
				address %s
			}
		}
		reverse_proxy {upstream}
	}`, slow.Addr))
	id := p.start("/together/index.m3u8", "frank")
	slow.Delay(50 * time.Millisecond)
	before := p.storeCalls("together")

	const rounds, together = 5, 8
	began := time.Now()
	for range rounds {
		time.Sleep(1100 * time.Millisecond) // past the 1 s renewal interval
		var wg sync.WaitGroup
		for range together {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, body := p.do(http.MethodGet, "/together/seg.ts", "frank", StreamIDHeader, id); r.StatusCode != http.StatusOK {
					t.Errorf("segment: %s %s", r.Status, body)
				}
			}()
		}
		wg.Wait()
	}
	calls := p.storeCalls("together") - before
	// One renewal a round; the keepalive (every 1 s, when it finds a request
	// in flight) may add one a second of the test's real duration.
	bound := float64(rounds + int(time.Since(began)/time.Second) + 1)
	t.Logf("%d rounds of %d requests at once: %v store calls (bound %v)", rounds, together, calls, bound)
	if calls > bound {
		t.Fatalf("%v store calls for %d rounds of %d requests at once, want at most %v", calls, rounds, together, bound)
	}
}
