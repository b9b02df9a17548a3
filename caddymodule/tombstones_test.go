package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
)

// TestCloseFloodIsBounded: one user starting and closing streams as fast as
// it can leaves at most lease.MaxTombstones in Redis, and its latest closed
// id is still refused; everyone's limit holds throughout.
func TestCloseFloodIsBounded(t *testing.T) {
	srv := redistest.Start(t)
	p := startCaddy(t, fmt.Sprintf(`
	route /m/* {
		stream_limit {
			mode session
		}
		reverse_proxy {upstream}
	}
	route /r/* {
		stream_limit {
			zone r
			mode session
			store redis {
				address %s
			}
		}
		reverse_proxy {upstream}
	}`, srv.Addr))
	for _, prefix := range []string{"/m/", "/r/"} {
		var last string
		for i := range 500 {
			r, _ := p.do(http.MethodGet, prefix+"index.m3u8", "flooder")
			last = r.Header.Get(StreamIDHeader)
			if r.StatusCode != http.StatusOK || last == "" {
				t.Fatalf("%s start %d: %s", prefix, i, r.Status)
			}
			if r, _ := p.do(http.MethodDelete, prefix+"index.m3u8", "flooder", StreamIDHeader, last); r.StatusCode != http.StatusNoContent {
				t.Fatalf("%s close %d: %s", prefix, i, r.Status)
			}
		}
		if r, _ := p.do(http.MethodGet, prefix+"seg.ts", "flooder", StreamIDHeader, last); r.StatusCode != http.StatusConflict {
			t.Fatalf("%s the latest closed id: %s, want 409", prefix, r.Status)
		}
		for i := range DefaultLimit {
			if r, _ := p.do(http.MethodGet, prefix+"index.m3u8", "flooder"); r.StatusCode != http.StatusOK {
				t.Fatalf("%s start %d after the flood: %s", prefix, i+1, r.Status)
			}
		}
		if r, _ := p.do(http.MethodGet, prefix+"index.m3u8", "flooder"); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s start past the limit after the flood: %s", prefix, r.Status)
		}
	}
	client := srv.Client(t)
	keys, err := client.Keys(context.Background(), "streamlimit:*:t").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("tombstone keys: %v %v", keys, err)
	}
	if n, _ := client.ZCard(context.Background(), keys[0]).Result(); n > lease.MaxTombstones {
		t.Fatalf("%d tombstones in Redis after 500 closes, want at most %d", n, lease.MaxTombstones)
	}
}

// TestLocalRevokedStreamsAreBounded: this process remembers revoked streams
// to refuse them without a store call, but no more than maxLocalRevoked of
// them with nothing in flight, however many a client gets revoked.
func TestLocalRevokedStreamsAreBounded(t *testing.T) {
	if err := initMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	z, err := loadZone("bounded", MemoryStore{})
	if err != nil {
		t.Fatal(err)
	}
	defer zones.Delete(zoneKey{"bounded", "memory"})
	key := lease.Key{Zone: "bounded", User: "flooder"}
	busy := streamRef{key, lease.NewID(lease.NewSecret(), key)}
	_, req, _ := z.enter(busy, streamTerms{ttl: 30 * time.Second, limit: 3, session: true}, true, func(error) {})
	z.markRevoked(busy, time.Minute)
	for range 3 * maxLocalRevoked {
		z.markRevoked(streamRef{key, lease.NewID(lease.NewSecret(), key)}, time.Minute)
	}
	n, kept := z.streams.len(), z.lookup(busy) != nil
	if n > maxLocalRevoked+1 {
		t.Fatalf("%d revoked streams remembered, want at most %d", n, maxLocalRevoked+1)
	}
	if !kept {
		t.Fatal("a revoked stream with a request in flight was forgotten")
	}
	z.lookup(busy).leave(req)
}

// TestFullRedisAppliesTheStoreErrorPolicy: a Redis out of memory (maxmemory
// with noeviction) refuses the limiter's writes, and the handler treats
// that as any store failure: on_store_error decides, counted and visible.
func TestFullRedisAppliesTheStoreErrorPolicy(t *testing.T) {
	srv := redistest.StartTight(t)
	p := startCaddy(t, redisSite(srv.Addr, ""))
	srv.Fill(t)
	r, body := p.do(http.MethodGet, "/deny/x.m3u8", "alice")
	if r.StatusCode != http.StatusServiceUnavailable || decodeJSON(t, body)["error"] != "store_unavailable" {
		t.Fatalf("start on a full Redis with deny: %s %s", r.Status, body)
	}
	if r, body := p.do(http.MethodGet, "/r/x.ts", "alice"); r.StatusCode != http.StatusOK {
		t.Fatalf("start on a full Redis with allow: %s %s", r.Status, body)
	}
	m := p.scrape()
	for _, zone := range []string{"default", "deny"} {
		if errs := storeErrors(m, zone); errs < 1 {
			t.Fatalf("zone %s: the refused writes are not counted as store errors", zone)
		}
	}
	// (In the allow zone the stream's release, which frees memory, went
	// through after the refused writes: its last call was answered.)
	if up := m[`caddy_stream_limit_store_up{store="redis",zone="deny"}`]; up != 0 {
		t.Fatalf("store_up on a full Redis is %v", up)
	}
}

// storeErrors adds up a zone's store errors over every operation.
func storeErrors(scraped map[string]float64, zone string) float64 {
	var n float64
	for series, v := range scraped {
		if strings.HasPrefix(series, "caddy_stream_limit_store_errors_total{") && strings.Contains(series, `zone="`+zone+`"`) {
			n += v
		}
	}
	return n
}
