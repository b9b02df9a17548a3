package caddymodule

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// TestARestartIsNotANewScreen (issue 14, item 2): through a real Caddy in
// front of the test media, on both stores, with limit 1. A viewer playing
// a title starts it over from the same device (a page reload), more than
// a lease into the playback: the new start is served at once, with a new
// stream, which plays; the old stream's next segment gets 409
// stream_replaced; the user holds one stream; another device is still
// refused at the limit.
func TestARestartIsNotANewScreen(t *testing.T) {
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSite(t, "zone restart_"+store+"\nlimit 1\nlease 30s\n"+storeBlock)
		const user, device = "reloader", "10.0.7.1"
		segment := func(pb playback, n int) (*http.Response, string) {
			return p.do(http.MethodGet, pb.uri(t, fmt.Sprintf("seg%03d.ts", n)), user, "X-Forwarded-For", device)
		}
		first := p.startFrom(testmedia.Entry["flat"], user, device)
		// Playing for more than a lease: a segment every 2 s of media,
		// on the handler's clock.
		for n := range 20 {
			if r, body := segment(first, n); r.StatusCode != http.StatusOK {
				t.Fatalf("segment %d: %s %s", n, r.Status, body)
			}
			advance(t, 2*time.Second)
		}
		began := time.Now()
		again := p.startFrom(testmedia.Entry["flat"], user, device)
		t.Logf("the restart was served %v after it was asked for", time.Since(began).Round(time.Millisecond))
		if again.id == first.id {
			t.Fatal("the restart continued the old stream; want it replaced")
		}
		if r, body := segment(again, 20); r.StatusCode != http.StatusOK {
			t.Fatalf("the restarted playback's segment: %s %s", r.Status, body)
		}
		r, body := segment(first, 20)
		if r.StatusCode != http.StatusConflict || decodeJSON(t, body)["error"] != "stream_replaced" {
			t.Fatalf("the replaced stream's next segment: %s %s; want 409 stream_replaced", r.Status, body)
		}
		if l := p.listed("/streams", user); len(l) != 1 || l[0].(map[string]any)["id"] != again.id {
			t.Fatalf("after the restart the user holds %v; want the restarted stream alone", l)
		}
		if r, _ := p.do(http.MethodGet, testmedia.Entry["flat"], user, "X-Forwarded-For", "10.0.7.2"); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("another device at the limit: %s", r.Status)
		}
	})
}
