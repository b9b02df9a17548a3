package caddymodule

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/faultproxy"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// startSlowProxy puts a fault proxy before target, whose Delay makes it a
// Redis that answers, but late.
func startSlowProxy(t *testing.T, target string) *faultproxy.Proxy {
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestSlowRedis: Redis answers late, then promptly again. The live leases
// outlast the slow spell (lease 10s): the test is about timeouts and
// recovery, not about a lease lapsing meanwhile, after which a start may
// rightly take the slot of a live stream (docs/GUARANTEES.md).
func TestSlowRedis(t *testing.T) {
	srv := redistest.Start(t)
	slow := startSlowProxy(t, srv.Addr)
	const timeout = time.Second
	p := startCaddy(t, strings.NewReplacer("lease 2s", "lease 10s", "timeout 300ms", "timeout 1s").Replace(redisSite(slow.Addr, "")))

	for range 3 {
		p.open("/r/slow/v.ts", "alice")
	}
	if r, _ := p.do(http.MethodGet, "/r/v.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth start with a prompt Redis: %s", r.Status)
	}

	// Redis answers 10 s late, ten times the timeout: a handler that
	// ignored the timeout would wait for the answer.
	slow.Delay(10 * time.Second)
	for range 2 {
		storeBounded(t, p, "/r/x.ts", "bob", http.StatusOK, timeout)
		storeBounded(t, p, "/deny/x.ts", "bob", http.StatusServiceUnavailable, timeout)
	}
	var errs float64
	for series, v := range p.scrape() {
		if strings.HasPrefix(series, "caddy_stream_limit_store_errors_total{") && strings.Contains(series, `zone="deny"`) {
			errs += v
		}
	}
	if errs < 2 {
		t.Fatalf("timeouts counted as store errors: %v", errs)
	}

	// Redis is prompt again: the limit holds again, with the same slots.
	slow.Delay(0)
	eventually(t, "the limiter recovers", func() bool {
		r, _ := p.do(http.MethodGet, "/r/v.ts", "alice")
		return r.StatusCode == http.StatusTooManyRequests
	})
	if n := len(p.listed("/r/streams", "alice")); n != 3 {
		t.Fatalf("after recovery alice holds %d streams, want 3", n)
	}
}

// storeBounded sends a start that the store cannot answer in time (under
// redisSite: /r/ allows it, /deny/ refuses it with 503) and checks that it
// cost at most the store timeout plus three quarters of it for the request
// itself. A call returns at its deadline, never before: a handler whose
// store calls waited two timeouts (a deadline twice or three times too
// long, or a retry after the first timeout) takes at least twice the
// timeout and fails here, however loaded the machine.
func storeBounded(t *testing.T, p *proxy, path, user string, want int, timeout time.Duration) {
	t.Helper()
	began := time.Now()
	r, body := p.do(http.MethodGet, path, user)
	took := time.Since(began)
	if r.StatusCode != want {
		t.Fatalf("%s with the store unable to answer: %s %s, want %d", path, r.Status, body, want)
	}
	if want == http.StatusServiceUnavailable && decodeJSON(t, body)["error"] != "store_unavailable" {
		t.Fatalf("%s with the store unable to answer: %s", path, body)
	}
	t.Logf("%s with the store unable to answer: %s in %v (store timeout %v)", path, r.Status, took.Round(time.Millisecond), timeout)
	if bound := timeout * 7 / 4; took > bound {
		t.Fatalf("%s with the store unable to answer took %v, want at most %v (store timeout %v)", path, took.Round(time.Millisecond), bound, timeout)
	}
}
