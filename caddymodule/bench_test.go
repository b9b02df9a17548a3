package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkContinuation measures what the handler adds to a request that
// continues a live session stream (the request every segment of every
// playback makes): no store call, since renewals are coalesced.
func BenchmarkContinuation(b *testing.B) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Zone: "bench", Mode: ModeSession}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	nop := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

	request := func(id string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/hls/seg00.ts", nil)
		r.Header.Set("X-User-Id", "viewer")
		if id != "" {
			r.Header.Set(StreamIDHeader, id)
		}
		return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(r)))
	}
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, request(""), nop); err != nil {
		b.Fatal(err)
	}
	id := w.Header().Get(StreamIDHeader)
	r := request(id)
	// The handler takes the id off the request (the origin never sees
	// one): each round puts it back, as each request of a player has it.
	carried := []string{id}
	hdr := http.Header{}
	rw := headerOnly{hdr}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		clear(hdr)
		r.Header[StreamIDHeader] = carried
		if err := h.ServeHTTP(rw, r, nop); err != nil {
			b.Fatal(err)
		}
	}
	if hdr.Get(StreamIDHeader) != id {
		b.Fatalf("continuation answered %v", hdr)
	}
}

// headerOnly is a response writer that keeps headers and drops the rest.
type headerOnly struct{ h http.Header }

func (w headerOnly) Header() http.Header         { return w.h }
func (w headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (w headerOnly) WriteHeader(int)             {}

// BenchmarkChurn measures a connection-mode stream's whole life on the
// memory store: admit, serve, release.
func BenchmarkChurn(b *testing.B) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Zone: "churn"}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	nop := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	r := httptest.NewRequest(http.MethodGet, "/v.mp4", nil)
	r.Header.Set("X-User-Id", "viewer")
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(r)))
	hdr := http.Header{}
	rw := headerOnly{hdr}
	b.ReportAllocs()
	for range b.N {
		clear(hdr)
		if err := h.ServeHTTP(rw, r, nop); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManifestContinuation measures a player of a live stream reading
// its media playlist again (10 segments of 2 s, a live window, and 300 and
// 1,000, DVR windows of ten and 33 minutes; the next handler stands for
// the origin): the token check, and the rewriting that gives every URI the
// stream's token (by the playlist's plan, made at the first read).
func BenchmarkManifestContinuation(b *testing.B) {
	for _, n := range []int{10, 300, 1000} {
		b.Run(fmt.Sprintf("segments=%d", n), func(b *testing.B) { benchmarkManifestContinuation(b, n) })
	}
}

func benchmarkManifestContinuation(b *testing.B, segments int) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Zone: fmt.Sprintf("manifests%d", segments), Mode: ModeSession, PathToken: true}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	var playlist strings.Builder
	// Live (no end): the start is redirected to the tokenized URL.
	playlist.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n")
	for i := range segments {
		fmt.Fprintf(&playlist, "#EXTINF:2.000000,\nseg%05d.ts\n", i)
	}
	origin := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		_, err := io.WriteString(w, playlist.String())
		return err
	})
	request := func(target string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.Header.Set("X-User-Id", "viewer")
		ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(r))
		return r.WithContext(context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{}))
	}
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, request("/live/index.m3u8"), origin); err != nil {
		b.Fatal(err)
	}
	tokenized := "/live/" + strings.TrimPrefix(w.Header().Get("Location"), "./")
	b.Run("origin alone", func(b *testing.B) {
		// The same requests and response, without the handler: what the
		// handler adds is the difference.
		b.ReportAllocs()
		for range b.N {
			rw := httptest.NewRecorder()
			if err := origin.ServeHTTP(rw, request(tokenized)); err != nil || rw.Code != http.StatusOK {
				b.Fatalf("%v %d", err, rw.Code)
			}
		}
	})
	b.Run("through the handler", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			rw := httptest.NewRecorder()
			if err := h.ServeHTTP(rw, request(tokenized), origin); err != nil || rw.Code != http.StatusOK {
				b.Fatalf("%v %d", err, rw.Code)
			}
		}
	})
}

// BenchmarkLiveStreamsInHeap measures what live streams cost in Caddy's
// heap (runtime.MemStats after a GC) on the memory store: each started
// through the handler by its own request, 3 per user, and holding its
// slot. That is the store's lease and this process's state of the stream
// (its keepalive timer too, which runs while the stream's media plays).
//
//	go test -run '^$' -bench LiveStreamsInHeap -benchtime 1x ./caddymodule/
func BenchmarkLiveStreamsInHeap(b *testing.B) {
	for _, n := range []struct {
		name    string
		streams int
	}{{"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(n.name, func(b *testing.B) {
			for range b.N {
				ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
				h := &Handler{Zone: "heap-" + n.name, Mode: ModeSession, Lease: caddy.Duration(time.Hour)}
				if err := h.Provision(ctx); err != nil {
					b.Fatal(err)
				}
				before := heapInUse()
				w := headerOnly{http.Header{}}
				for i := range n.streams {
					// (Media: the start is confirmed, and holds its slot.)
					r := httptest.NewRequest(http.MethodGet, "/hls/seg00.ts", nil)
					r.Header.Set("X-User-Id", "viewer-"+strconv.Itoa(i/3))
					r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(r)))
					clear(w.h)
					if err := h.ServeHTTP(w, r, nopHandler); err != nil {
						b.Fatal(err)
					}
					if w.h.Get(StreamIDHeader) == "" {
						b.Fatalf("stream %d was not started: %v", i, w.h)
					}
				}
				b.ReportMetric(float64(heapInUse()-before)/float64(n.streams), "bytes/stream")
				h.Cleanup()
				cancel()
			}
		})
	}
}

var nopHandler = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// BenchmarkContinuationBesideTheSweep measures what the sweep of idle
// streams (every 10 s) does to the requests that arrive while it runs, in
// a zone of 1M live streams on the memory store: continuations of those
// streams through the handler, on one goroutine, while another sweeps
// every 10 ms. It reports the continuations' p99 and worst latency, and
// how long a sweep takes.
//
//	go test -run '^$' -bench ContinuationBesideTheSweep -benchtime 20000x ./caddymodule/
func BenchmarkContinuationBesideTheSweep(b *testing.B) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Zone: "sweep", Mode: ModeSession, Lease: caddy.Duration(time.Hour)}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	request := func(user int, id string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/hls/seg00.ts", nil)
		r.Header.Set("X-User-Id", "viewer-"+strconv.Itoa(user))
		if id != "" {
			r.Header.Set(StreamIDHeader, id)
		}
		return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(r)))
	}
	const streams = 1_000_000
	ids := make([]string, streams)
	w := headerOnly{http.Header{}}
	for i := range ids {
		clear(w.h)
		if err := h.ServeHTTP(w, request(i/3, ""), nopHandler); err != nil {
			b.Fatal(err)
		}
		ids[i] = w.h.Get(StreamIDHeader)
	}

	stop, swept := make(chan struct{}), make(chan time.Duration, 1)
	go func() {
		var n int
		var took time.Duration
		for {
			select {
			case <-stop:
				swept <- took / time.Duration(max(n, 1))
				return
			default:
			}
			began := time.Now()
			h.zone.sweepIdle(now())
			took += time.Since(began)
			n++
			time.Sleep(10 * time.Millisecond)
		}
	}()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		s := (i * 7919) % streams
		r := request(s/3, ids[s])
		began := time.Now()
		if err := h.ServeHTTP(w, r, nopHandler); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(began))
	}
	b.StopTimer()
	close(stop)
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64((<-swept).Microseconds()), "µs/sweep")
}
