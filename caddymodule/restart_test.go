package caddymodule

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// TestARestartIsNotANewScreen (issue 14, item 2, in part): through a real
// Caddy in front of the test media, on both stores, with limit 1. A viewer
// playing a title starts it over from the same device (a page reload),
// more than a lease into the playback: the start is served at once, as
// the same stream, which plays on; the user holds one stream; another
// device is still refused at the limit. (Before, a client's start was
// remembered for one lease: this reload got 429.)
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
		if again.id != first.id {
			t.Fatalf("the restart got stream %s; want its stream %s continued", again.id, first.id)
		}
		if r, body := segment(again, 20); r.StatusCode != http.StatusOK {
			t.Fatalf("the restarted playback's segment: %s %s", r.Status, body)
		}
		if l := p.listed("/streams", user); len(l) != 1 {
			t.Fatalf("after the restart the user holds %v; want its one stream", l)
		}
		if r, _ := p.do(http.MethodGet, testmedia.Entry["flat"], user, "X-Forwarded-For", "10.0.7.2"); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("another device at the limit: %s", r.Status)
		}
	})
}

// TestARefusalNamesTheScreens (issue 14, item 4, in part): a refusal at
// the limit tells the player which of the user's own screens hold the
// slots, by when they started and, coarsely, what plays them; on both
// stores.
func TestARefusalNamesTheScreens(t *testing.T) {
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSite(t, "zone named_"+store+"\nlimit 1\n"+storeBlock)
		const phone = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
		began := time.Now().UTC().Truncate(time.Second)
		if r, body := p.do(http.MethodGet, testmedia.Entry["flat"], "named", "User-Agent", phone); r.StatusCode != http.StatusOK {
			t.Fatalf("the first screen's start: %s %s", r.Status, body)
		}
		r, body := p.do(http.MethodGet, testmedia.Entry["flat"], "named", "User-Agent", "VLC/3.0.21 LibVLC/3.0.21")
		if r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a second screen at limit 1: %s %s", r.Status, body)
		}
		got := decodeJSON(t, body)
		screens, _ := got["screens"].([]any)
		if got["error"] != "stream_limit_exceeded" || got["limit"] != 1.0 || got["active"] != 1.0 || len(screens) != 1 {
			t.Fatalf("refusal body %s: want stream_limit_exceeded, limit 1, active 1, one screen", body)
		}
		sc := screens[0].(map[string]any)
		started, err := time.Parse(time.RFC3339, fmt.Sprint(sc["started"]))
		if err != nil || started.Before(began.Add(-time.Second)) || sc["client"] != "Chrome on Android" {
			t.Fatalf("the screen named: %v; want started since %v, client Chrome on Android", sc, began)
		}
	})
}

// TestClientKinds: the coarse names a refusal gives screens.
func TestClientKinds(t *testing.T) {
	for ua, want := range map[string]string{
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36":                                   "Chrome on Linux",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0":           "Edge on Windows",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1": "Safari on iOS",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:128.0) Gecko/20100101 Firefox/128.0":                                                     "Firefox on macOS",
		"VLC/3.0.21 LibVLC/3.0.21": "VLC",
		"Lavf/61.7.100":            "ffmpeg",
		"mpv 0.38.0":               "mpv",
		"Mozilla/5.0 (SMART-TV; LINUX; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) 7.0 TV Safari/537.36": "a TV",
		"Go-http-client/1.1": "",
		"":                   "",
	} {
		if got := clientKind(ua); got != want {
			t.Errorf("%q: %q, want %q", ua, got, want)
		}
	}
}
