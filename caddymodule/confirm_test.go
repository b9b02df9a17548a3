package caddymodule

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// confirmWindow is the tests' confirm_within: short, so that a start that
// no media confirms is seen to lose its slot; the lease is long, so that
// a confirmed one is seen to keep it.
const confirmWindow = 2 * time.Second

// TestStartsAreConfirmedByPlayback (issue 14, item 1): through a real Caddy
// in front of the test media, on both stores, with limit 1.
//   - A browser's favicon that the origin has (200, image/x-icon) holds a
//     slot for the window, then none; one it has not (404), none at once;
//     so does a mistyped manifest URL.
//   - A probe that reads the master playlist and goes holds its slot for
//     the window, then the user may start another playback.
//   - A playback whose player fetched a segment holds its slot past the
//     window, for its lease; so does a progressive file.
func TestStartsAreConfirmedByPlayback(t *testing.T) {
	needFFmpeg(t)
	files := testmedia.Origin(testmedia.Dir(t))
	origin := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/favicon.ico" {
			w.Header().Set("Content-Type", "image/x-icon")
			w.Write([]byte{0, 0, 1, 0})
			return
		}
		files.ServeHTTP(w, r)
	}))
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSiteWith(t, origin.Addr, fmt.Sprintf("zone confirm_%s\nlimit 1\nlease 30s\nconfirm_within %v\n%s", store, confirmWindow, storeBlock))
		count := func(user string) int { _, n := leaseLeft(p, user); return n }
		// freesAtOnce: the user's slot is free well within the window.
		freesAtOnce := func(what, user string) {
			t.Helper()
			deadline := time.Now().Add(confirmWindow / 2)
			for count(user) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the slot is still held %v after an error answered the start", what, confirmWindow/2)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		// freesAfterWindow: held within the window (when the test could
		// look soon enough: a loaded machine may not), free once it is over.
		freesAfterWindow := func(what, user string, began time.Time) {
			t.Helper()
			if n := count(user); n != 1 && time.Since(began) < confirmWindow/2 {
				t.Fatalf("%s: %d streams within the window, want 1", what, n)
			}
			time.Sleep(confirmWindow + 500*time.Millisecond)
			if n := count(user); n != 0 {
				t.Fatalf("%s: %d streams after the window with no media, want 0", what, n)
			}
		}

		began := time.Now()
		if r, _ := p.do(http.MethodGet, "/favicon.ico", "icon"); r.StatusCode != http.StatusOK {
			t.Fatalf("favicon: %s", r.Status)
		}
		freesAfterWindow("a favicon", "icon", began)

		if r, _ := p.do(http.MethodGet, "/missing.ico", "missing"); r.StatusCode != http.StatusNotFound {
			t.Fatalf("a missing favicon: %s", r.Status)
		}
		freesAtOnce("a missing favicon", "missing")
		if r, _ := p.do(http.MethodGet, "/flat/indx.m3u8", "typo"); r.StatusCode != http.StatusNotFound {
			t.Fatalf("a mistyped manifest: %s", r.Status)
		}
		freesAtOnce("a mistyped manifest", "typo")

		began = time.Now()
		p.startFrom(testmedia.Entry["renditions"], "prober", "10.0.9.1")
		freesAfterWindow("a probe of the master playlist", "prober", began)
		// At limit 1, the user starts a real playback after it.
		play := p.startFrom(testmedia.Entry["flat"], "prober", "10.0.9.2")
		if r, body := p.do(http.MethodGet, play.uri(t, "seg000.ts"), "prober"); r.StatusCode != http.StatusOK {
			t.Fatalf("the playback's first segment: %s %s", r.Status, body)
		}
		time.Sleep(confirmWindow + 500*time.Millisecond)
		if left, n := leaseLeft(p, "prober"); n != 1 || left < 20*time.Second {
			t.Fatalf("a playback that fetched a segment, after the window: %d streams, lease running %v more; want 1, for its lease", n, left)
		}

		if r, _ := p.do(http.MethodGet, testmedia.Entry["mp4"], "progressive"); r.StatusCode != http.StatusOK {
			t.Fatalf("progressive file: %s", r.Status)
		}
		time.Sleep(confirmWindow + 500*time.Millisecond)
		if n := count("progressive"); n != 1 {
			t.Fatalf("a progressive file fetched whole, after the window: %d streams, want 1", n)
		}
	})
}

// TestWhatIsMedia: what confirms a start, whatever type a file server
// gives a segment; what does not, a manifest or a page or an icon.
func TestWhatIsMedia(t *testing.T) {
	for _, c := range []struct {
		path, contentType string
		segment, want     bool
	}{
		{"/v/seg000.ts", "video/mp2t", false, true},
		{"/v/seg000.ts", "text/vnd.trolltech.linguist", false, true}, // Debian's /etc/mime.types
		{"/v/seg000.m4s", "video/iso.segment", false, true},
		{"/v/chunk", "", true, true},
		{"/v/chunk", "application/octet-stream", false, true},
		{"/v/clip.mp4", "video/mp4", false, true},
		{"/v/a.aac", "audio/aac", false, true},
		{"/v/index.m3u8", "application/vnd.apple.mpegurl", true, false},
		{"/v/index", "application/vnd.apple.mpegurl", false, false},
		{"/v/manifest.mpd", "application/dash+xml", false, false},
		{"/favicon.ico", "image/x-icon", false, false},
		{"/v/", "text/html; charset=utf-8", false, false},
		{"/v/error.json", "application/json", false, false},
	} {
		if got := isMedia(c.path, c.contentType, c.segment); got != c.want {
			t.Errorf("%s (%s, segment %v): media %v, want %v", c.path, c.contentType, c.segment, got, c.want)
		}
	}
}
