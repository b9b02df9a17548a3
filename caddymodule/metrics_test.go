package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// scrape reads the stream_limit series from Caddy's admin /metrics.
func (p *proxy) scrape() map[string]float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_stream_limit_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, _ := strconv.ParseFloat(line[i+1:], 64)
		out[line[:i]] = v
	}
	return out
}

const metricsSite = `
	route /s/* {
		stream_limit {
			zone m
			mode session
			limit 2
			list_path /s/streams
		}
		reverse_proxy {upstream}
	}
	route /e/* {
		stream_limit {
			zone m
			mode session
			limit 2
			on_limit evict_oldest
		}
		reverse_proxy {upstream}
	}
	route /c/* {
		stream_limit {
			zone m
			limit 2
		}
		reverse_proxy {upstream}
	}`

func TestMetricsSurviveReloads(t *testing.T) {
	p := startCaddy(t, metricsSite)
	series := func(name, labels string) string { return fmt.Sprintf("caddy_stream_limit_%s{%s}", name, labels) }

	// One of each cause and reason.
	exercise := func() {
		p.start("/s/a.m3u8", "alice")
		p.start("/s/a.m3u8", "alice")
		p.do(http.MethodGet, "/s/a.m3u8", "alice")                            // denied: limit
		p.do(http.MethodGet, "/s/a.m3u8", "")                                 // denied: missing_user
		newest := p.start("/e/a.m3u8", "alice")                               // released: eviction (of the oldest)
		p.do(http.MethodDelete, "/s/a.m3u8", "alice", StreamIDHeader, newest) // released: close
		kick := p.listed("/s/streams", "alice")[0].(map[string]any)["id"].(string)
		p.adminDo(http.MethodDelete, "/stream_limit/zones/m/users/alice/streams/"+kick, "") // released: kick
		p.do(http.MethodGet, "/c/v.ts", "alice")                                            // released: connection_end
		p.start("/s/a.m3u8", "alice")
		advance(t, 31*time.Second) // released: expiry, seen at the next store call
		p.listed("/s/streams", "alice")
	}
	want := []string{
		series("admitted_total", `zone="m"`),
		series("denied_total", `reason="limit",zone="m"`),
		series("denied_total", `reason="missing_user",zone="m"`),
		series("released_total", `cause="close",zone="m"`),
		series("released_total", `cause="connection_end",zone="m"`),
		series("released_total", `cause="eviction",zone="m"`),
		series("released_total", `cause="kick",zone="m"`),
		series("released_total", `cause="expiry",zone="m"`),
		series("store_duration_seconds_count", `op="acquire",zone="m"`),
	}
	var last map[string]float64
	for round := range 3 {
		if round > 0 {
			p.reload(metricsSite) // each reload brings a new registry
		}
		exercise()
		var got map[string]float64
		eventually(t, "every counter moved", func() bool {
			got = p.scrape()
			for _, s := range want {
				if got[s] <= last[s] {
					return false
				}
			}
			return true
		})
		last = got
	}
	if _, ok := last[series("active_streams", `zone="m"`)]; !ok {
		t.Fatal("no active_streams gauge")
	}
	for s := range last {
		if strings.Contains(s, "alice") {
			t.Fatalf("a series is labelled by user: %s", s)
		}
	}
}

func TestStoreErrorsAreCounted(t *testing.T) {
	srv := redistest.Start(t)
	p := startCaddy(t, redisSite(srv.Addr, ""))
	p.do(http.MethodGet, "/r/x.ts", "alice")
	srv.Kill()
	p.do(http.MethodGet, "/r/x.ts", "alice")
	if got := p.scrape()[`caddy_stream_limit_store_errors_total{op="acquire",zone="default"}`]; got < 1 {
		t.Fatalf("store errors counted: %v", got)
	}
}

// recorder is an event handler module for the tests: it keeps every event
// it hears.
type recorder struct{}

var recorded struct {
	sync.Mutex
	events []caddy.Event
}

func init() { caddy.RegisterModule(recorder{}) }

func (recorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.stream_limit_test_recorder", New: func() caddy.Module { return new(recorder) }}
}

func (recorder) Handle(_ context.Context, e caddy.Event) error {
	recorded.Lock()
	defer recorded.Unlock()
	recorded.events = append(recorded.events, e)
	return nil
}

func TestEventsForStartsEndsAndDenials(t *testing.T) {
	recorded.Lock()
	recorded.events = nil
	recorded.Unlock()
	p := &proxy{t: t, origin: newOrigin(t)}
	p.addr = loopback.Addr(t)
	p.admin = loopback.Addr(t)
	p.patch = func(cfg []byte) []byte {
		var m map[string]any
		json.Unmarshal(cfg, &m)
		m["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
			"events":   []string{"stream_started", "stream_ended", "stream_denied"},
			"handlers": []any{map[string]any{"handler": "stream_limit_test_recorder"}},
		}}}
		out, _ := json.Marshal(m)
		return out
	}
	p.load(metricsSite)
	t.Cleanup(func() { caddy.Stop() })

	id := p.start("/s/a.m3u8", "eve")
	p.start("/s/a.m3u8", "eve")
	p.do(http.MethodGet, "/s/a.m3u8", "eve")
	p.do(http.MethodDelete, "/s/a.m3u8", "eve", StreamIDHeader, id)

	seen := func(name string, match func(map[string]any) bool) bool {
		recorded.Lock()
		defer recorded.Unlock()
		for _, e := range recorded.events {
			if e.Name() == name && e.Data["zone"] == "m" && match(e.Data) {
				return true
			}
		}
		return false
	}
	eventually(t, "stream_started", func() bool {
		return seen("stream_started", func(d map[string]any) bool { return d["stream_id"] == id && d["user"] == "eve" })
	})
	eventually(t, "stream_denied", func() bool {
		return seen("stream_denied", func(d map[string]any) bool { return d["reason"] == "limit" && d["limit"] == 2 && d["active"] == 2 })
	})
	eventually(t, "stream_ended", func() bool {
		return seen("stream_ended", func(d map[string]any) bool { return d["stream_id"] == id && d["cause"] == "close" })
	})
}

func TestRefusalLogsAreSampledAndKeepUsersOut(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "stream_limit.log")
	p := startCaddyWith(t, fmt.Sprintf(`	log limiter {
		output file %s
		format json
		include http.handlers.stream_limit
	}`, logFile), `
	route /quiet/* {
		stream_limit {
			zone quiet
			mode session
			limit 1
		}
		reverse_proxy {upstream}
	}
	route /named/* {
		stream_limit {
			zone named
			mode session
			limit 1
			log_user
		}
		reverse_proxy {upstream}
	}`)
	p.start("/quiet/a.m3u8", "hammer-user")
	began := time.Now()
	for range 500 {
		p.do(http.MethodGet, "/quiet/a.m3u8", "hammer-user")
	}
	// The sampler lets the first 5 a second through, then one in 100: a
	// loaded machine that takes longer over the 500 sees more seconds.
	sampled := 5*(int(time.Since(began)/time.Second)+1) + 500/100 + 1
	p.start("/named/a.m3u8", "named-user")
	p.do(http.MethodGet, "/named/a.m3u8", "named-user")

	var refusals int
	var log string
	eventually(t, "the named refusal is logged", func() bool {
		b, _ := os.ReadFile(logFile)
		log = string(b)
		return strings.Contains(log, `"zone":"named"`)
	})
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "stream request refused") && strings.Contains(line, `"zone":"quiet"`) {
			refusals++
			if !strings.Contains(line, `"reason":"limit"`) {
				t.Fatalf("refusal logged without its reason: %s", line)
			}
		}
	}
	if refusals == 0 || refusals > sampled {
		t.Fatalf("500 refusals in %v wrote %d log entries; want a few (sampled: at most %d), not none and not a flood",
			time.Since(began).Round(time.Second), refusals, sampled)
	}
	if strings.Contains(log, "hammer-user") {
		t.Fatal("the user was logged without log_user")
	}
	if !strings.Contains(log, `"user":"named-user"`) {
		t.Fatal("log_user did not log the user")
	}
}
