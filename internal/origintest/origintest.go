// Package origintest is the video origin of the end-to-end tests: a real
// HTTP server on a free loopback port whose streams trickle until the
// client leaves, and which keeps the books a test asserts on: what was
// asked for, what is being served, when it stopped.
package origintest

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Origin is a running origin server.
type Origin struct {
	// Addr is the origin's host:port, for reverse_proxy.
	Addr string

	mu      sync.Mutex
	hits    map[string]int       // path -> requests received
	serving map[string]int       // path -> requests being served
	ended   map[string]time.Time // path -> when its last request ended
}

// Start serves Default until the test ends.
func Start(t testing.TB) *Origin { return StartWith(t, http.HandlerFunc(Default)) }

// StartWith serves h until the test ends, and keeps the same books.
func StartWith(t testing.TB, h http.Handler) *Origin {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &Origin{Addr: l.Addr().String(), hits: map[string]int{}, serving: map[string]int{}, ended: map[string]time.Time{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		o.mu.Lock()
		o.hits[path]++
		o.serving[path]++
		o.mu.Unlock()
		defer func() {
			o.mu.Lock()
			o.serving[path]--
			o.ended[path] = time.Now()
			o.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return o
}

// Default streams (Trickle) a path that holds /slow/ and answers any other
// with "ok <path>".
func Default(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "/slow/") {
		Trickle(w, r)
		return
	}
	fmt.Fprintf(w, "ok %s", r.URL.Path)
}

// Trickle sends an MPEG-TS packet every 10ms until the client (or the
// proxy) leaves: a live stream, which never ends by itself, at no cost.
func Trickle(w http.ResponseWriter, r *http.Request) { TrickleFor(w, r, 0) }

// TrickleFor is Trickle that also ends, whole, after d (0: never): a
// segment that takes d to send.
func TrickleFor(w http.ResponseWriter, r *http.Request, d time.Duration) {
	w.Header().Set("Content-Type", "video/mp2t")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var over <-chan time.Time
	if d > 0 {
		over = time.After(d)
	}
	packet := make([]byte, 188)
	for {
		if _, err := w.Write(packet); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-over:
			return
		case <-tick.C:
		}
	}
}

// Hits counts the requests so far whose path starts with prefix ("" for
// all).
func (o *Origin) Hits(prefix string) int {
	return o.sum(o.hits, prefix)
}

// Paths lists every path asked for so far, sorted.
func (o *Origin) Paths() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.hits))
	for p := range o.hits {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Serving counts the requests being served whose path starts with prefix
// ("" for all).
func (o *Origin) Serving(prefix string) int {
	return o.sum(o.serving, prefix)
}

func (o *Origin) sum(counts map[string]int, prefix string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for p, c := range counts {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// LastEnd is when the last request whose path starts with prefix ended:
// the origin's handler returned, as it does once the client has left. It
// is the zero time while none has ended.
func (o *Origin) LastEnd(prefix string) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	var last time.Time
	for p, t := range o.ended {
		if strings.HasPrefix(p, prefix) && t.After(last) {
			last = t
		}
	}
	return last
}
