package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
)

// TestNullLimitIsTheDefault: JSON null for the limit is no limit given, as
// an absent field is (3), not 0 (every stream refused).
func TestNullLimitIsTheDefault(t *testing.T) {
	p := startCaddy(t, `
	route /n/* {
		stream_limit {
			limit 7
		}
		reverse_proxy {upstream}
	}`)
	// Load the same config with "limit": null in place of 7.
	p.patch = func(cfg []byte) []byte {
		return []byte(strings.Replace(string(cfg), `"limit":7`, `"limit":null`, 1))
	}
	p.reload(`
	route /n/* {
		stream_limit {
			limit 7
		}
		reverse_proxy {upstream}
	}`)
	var live []*liveStream
	for i := range DefaultLimit {
		s := p.open(fmt.Sprintf("/n/slow/%d", i), "nulluser")
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("start %d with limit null: %s", i+1, s.resp.Status)
		}
		live = append(live, s)
	}
	if r, _ := p.do(http.MethodGet, "/n/slow/x", "nulluser"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("start %d with limit null: %s, want 429 (the default limit %d)", DefaultLimit+1, r.Status, DefaultLimit)
	}
	for _, s := range live {
		s.cancel()
	}
	var h Handler
	if err := json.Unmarshal([]byte(`{"limit":null}`), &h); err != nil || h.Limit != "" {
		t.Fatalf("unmarshal null limit: %q %v", h.Limit, err)
	}
}

// TestUnreachableStoreAtStartIsLoud: a Redis that refuses connections when
// the config loads does not stop Caddy (it may come up later), but it is
// logged as an error that says what on_store_error will do meanwhile, and
// the store_up gauge reads 0.
func TestUnreachableStoreAtStartIsLoud(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "stream_limit.log")
	closed := loopback.Addr(t) // nothing listens there
	p := startCaddyWith(t, fmt.Sprintf(`	log limiter {
		output file %s
		format json
		include http.handlers.stream_limit
	}`, logFile), fmt.Sprintf(`
	route /r/* {
		stream_limit {
			zone unreachable
			store redis {
				address %s
				timeout 200ms
			}
		}
		reverse_proxy {upstream}
	}`, closed))
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string]any
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "does not answer at start-up") {
			json.Unmarshal([]byte(line), &entry)
		}
	}
	if entry == nil || entry["level"] != "error" || entry["zone"] != "unreachable" || !strings.Contains(entry["msg"].(string), "no limit (on_store_error allow)") {
		t.Fatalf("no error entry about the store at start-up; log:\n%s", b)
	}
	m := p.scrape()
	if up, ok := m[`caddy_stream_limit_store_up{store="redis",zone="unreachable"}`]; !ok || up != 0 {
		t.Fatalf("store_up = %v (present %v), want 0", up, ok)
	}
	if m[`caddy_stream_limit_store_errors_total{op="override",zone="unreachable"}`] < 1 {
		t.Fatalf("the failed check is not counted: %v", m)
	}
}
