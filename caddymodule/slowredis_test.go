package caddymodule

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// slowProxy is a TCP proxy that holds every chunk of the client's bytes for
// a delay the test sets: a Redis that answers, but late.
type slowProxy struct {
	addr  string
	delay atomic.Int64
}

func startSlowProxy(t *testing.T, target string) *slowProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &slowProxy{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(c, up)
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						time.Sleep(time.Duration(p.delay.Load()))
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// TestSlowRedis: Redis answers late, then promptly again. The live leases
// outlast the slow spell (lease 10s): the test is about timeouts and
// recovery, not about a lease lapsing meanwhile, after which a start may
// rightly take the slot of a live stream (docs/GUARANTEES.md).
func TestSlowRedis(t *testing.T) {
	srv := redistest.Start(t)
	slow := startSlowProxy(t, srv.Addr)
	p := startCaddy(t, strings.Replace(redisSite(slow.addr, ""), "lease 2s", "lease 10s", 1))

	for range 3 {
		p.open("/r/slow/v.ts", "alice")
	}
	if r, _ := p.do(http.MethodGet, "/r/v.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth start with a prompt Redis: %s", r.Status)
	}

	// Redis answers a second late: three times the 300ms timeout.
	slow.delay.Store(int64(time.Second))
	var slowest time.Duration
	for range 3 {
		began := time.Now()
		if r, _ := p.do(http.MethodGet, "/r/x.ts", "bob"); r.StatusCode != http.StatusOK {
			t.Fatalf("allow zone with a slow Redis: %s", r.Status)
		}
		slowest = max(slowest, time.Since(began))
		r, body := p.do(http.MethodGet, "/deny/x.ts", "bob")
		if r.StatusCode != http.StatusServiceUnavailable || decodeJSON(t, body)["error"] != "store_unavailable" {
			t.Fatalf("deny zone with a slow Redis: %s %s", r.Status, body)
		}
	}
	t.Logf("slowest request through the allow zone while Redis answered 1s late: %v (timeout 300ms)", slowest.Round(time.Millisecond))
	var errs float64
	for series, v := range p.scrape() {
		if strings.HasPrefix(series, "caddy_stream_limit_store_errors_total{") && strings.Contains(series, `zone="deny"`) {
			errs += v
		}
	}
	if errs < 3 {
		t.Fatalf("timeouts counted as store errors: %v", errs)
	}

	// Redis is prompt again: the limit holds again, with the same slots.
	slow.delay.Store(0)
	eventually(t, "the limiter recovers", func() bool {
		r, _ := p.do(http.MethodGet, "/r/v.ts", "alice")
		return r.StatusCode == http.StatusTooManyRequests
	})
	if n := len(p.listed("/r/streams", "alice")); n != 3 {
		t.Fatalf("after recovery alice holds %d streams, want 3", n)
	}
}
