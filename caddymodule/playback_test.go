package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
)

// titleLength is the length of the test media's title (testmedia/make.sh).
const titleLength = 90 * time.Second

// TestLeaseFollowsPlayback: stock ffmpeg fetches the whole 90 s title of
// each layout (the progressive MP4 too) as fast as it can, as stock hls.js does with small
// segments, then goes silent while (for a player) the video plays on. The
// stream's lease is then carried to the end of the media it was served,
// counted once (audio beside video and the DASH audio track add nothing),
// plus lease: not lapsed after lease, not held for twice the title. With
// the memory store, whose clock the test drives, the stream is still
// counted 80 s on and gone once its media and lease have run out. On both
// stores; on Redis, Redis's own clock sets the expiry checked.
func TestLeaseFollowsPlayback(t *testing.T) {
	const grace = 6 * time.Second
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		p := mediaSite(t, fmt.Sprintf("lease %v\n\t\t\t%s", grace, storeBlock))
		users := map[string]string{}
		// When each layout's fetch began and ended: its lease must run
		// to the title's end counted from then, plus the grace.
		began, ended := map[string]time.Time{}, map[string]time.Time{}
		for _, layout := range testmedia.Layouts {
			user := "coaster-" + layout
			users[layout] = user
			began[layout] = now()
			fetchTitle(t, p, layout, user)
			ended[layout] = now()
		}
		// The keepalive carries the lease within a renewal interval of
		// the last segment.
		deadline := time.Now().Add(3 * grace)
		var latest time.Time // the last lease to run out
		earliest := ended[testmedia.Layouts[0]]
		for layout, user := range users {
			for {
				left, n := leaseLeft(p, user)
				if n != 1 {
					t.Fatalf("%s: %d streams, want 1", layout, n)
				}
				// (A renewal during a slow fetch carries it part of the way
				// first: waited for until it covers the title, or until the
				// deadline.)
				expires := now().Add(left)
				if !expires.Before(began[layout].Add(titleLength+grace-2*time.Second)) || time.Now().After(deadline) {
					// The title's media from when it was fetched, plus the
					// grace; audio counted once. (ffmpeg reads the first
					// segments of every rendition to choose one: 8.1 s
					// more here, as an ABR switch adds; and a second for
					// the last renewal's trip on a loaded machine, whose
					// lease runs from when the store takes it.)
					if expires.Before(began[layout].Add(titleLength+grace-2*time.Second)) || expires.After(ended[layout].Add(titleLength+grace+9*time.Second)) {
						t.Fatalf("%s: the lease runs to %v after the fetch began (it took %v), want about %v (the media) + %v",
							layout, expires.Sub(began[layout]).Round(time.Millisecond), ended[layout].Sub(began[layout]).Round(time.Millisecond), titleLength, grace)
					}
					t.Logf("%s: the lease runs to %v after the fetch began (it took %v)", layout,
						expires.Sub(began[layout]).Round(time.Millisecond), ended[layout].Sub(began[layout]).Round(time.Millisecond))
					if expires.After(latest) {
						latest = expires
					}
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if store != "memory" {
			return
		}
		// 80 s after the first title was fetched (on a loaded machine
		// the fetches themselves may take a while): every title still
		// plays.
		if wait := earliest.Add(80 * time.Second).Sub(now()); wait > 0 {
			advance(t, wait)
		}
		for layout, user := range users {
			if n := admittedFor(p, user); n != 1 {
				t.Fatalf("%s: 80 s into a 90 s title with nothing fetched since, %d streams, want 1", layout, n)
			}
		}
		advance(t, latest.Sub(now())+time.Second)
		for layout, user := range users {
			if n := admittedFor(p, user); n != 0 {
				t.Fatalf("%s: after the title and the grace, %d streams, want 0", layout, n)
			}
		}
	})
}

// TestMaxBufferCapsTheLease: a download of the whole title holds its slot
// for max_buffer plus lease at most, not for the title.
func TestMaxBufferCapsTheLease(t *testing.T) {
	p := mediaSite(t, "lease 3s\n\t\t\tmax_buffer 20s")
	fetchTitle(t, p, "flat", "downloader")
	time.Sleep(2 * time.Second) // a renewal interval and more
	left, n := leaseLeft(p, "downloader")
	if n != 1 || left < 15*time.Second || left > 23*time.Second+time.Second {
		t.Fatalf("%d streams, lease running %v more; want 1, at most max_buffer 20s + lease 3s", n, left)
	}
}

// leaseLeft is how much longer the store holds the user's stream (by the
// test's clock), and how many streams the user holds. A store slower than
// its timeout on a loaded machine (503) is asked again.
func leaseLeft(p *proxy, user string) (time.Duration, int) {
	p.t.Helper()
	var body string
	for try := 0; ; try++ {
		resp, b := p.do(http.MethodGet, "/streams", user)
		if resp.StatusCode == http.StatusOK || try == 5 || resp.StatusCode != http.StatusServiceUnavailable {
			if resp.StatusCode != http.StatusOK {
				p.t.Fatalf("list: %s %s", resp.Status, b)
			}
			body = b
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	streams, _ := decodeJSON(p.t, body)["streams"].([]any)
	if len(streams) == 0 {
		return 0, 0
	}
	expires, err := time.Parse(time.RFC3339Nano, streams[0].(map[string]any)["expires"].(string))
	if err != nil {
		p.t.Fatal(err)
	}
	return expires.Sub(now()), len(streams)
}

// TestBurstOfSegmentsCostsFewStoreCalls: a player fetching a whole title's
// 45 segments at once (as stock hls.js does with small segments) costs the
// store its start and a renewal or two, not a call per segment: at most
// 0.1 store calls per segment, the renewal that carries the lease through
// the media included.
func TestBurstOfSegmentsCostsFewStoreCalls(t *testing.T) {
	p := mediaSite(t, "zone burst\n\t\t\tlease 9s")
	// The zone reads its id secret from the store once in its life: not a
	// cost of the playback.
	calls := func() float64 {
		return p.storeCalls("burst") - p.scrape()[`caddy_stream_limit_store_duration_seconds_count{op="secret",zone="burst"}`]
	}
	before := calls()
	fetchTitle(t, p, "flat", "burst")
	time.Sleep(4 * time.Second) // the keepalive's last renewal, a renewal interval (3 s) on
	spent := calls() - before
	segments := 45 // 90 s of 2 s segments (testmedia/make.sh)
	t.Logf("%d segments, %.0f store calls: %.3f per segment", segments, spent, spent/float64(segments))
	if spent/float64(segments) > 0.1 {
		t.Fatalf("%d segments cost %.0f store calls, want at most 0.1 per segment", segments, spent)
	}
	if left, n := leaseLeft(p, "burst"); n != 1 || left < titleLength/2 {
		t.Fatalf("after the burst: %d streams, lease running %v more; want 1, through the media", n, left)
	}
}

// mediaSite starts a Caddy with path_token in front of the test media,
// with the stream_limit options given.
func mediaSite(t *testing.T, options string) *proxy {
	t.Helper()
	needFFmpeg(t)
	return mediaSiteWith(t, origintest.StartWith(t, testmedia.Origin(testmedia.Dir(t))).Addr, options)
}

// mediaSiteWith is mediaSite in front of another origin.
func mediaSiteWith(t *testing.T, origin, options string) *proxy {
	t.Helper()
	return startCaddy(t, `
	route /* {
		stream_limit {
			mode session
			path_token
			list_path /streams
			`+strings.ReplaceAll(options, "\n", "\n\t\t\t")+`
		}
		reverse_proxy `+origin+`
	}`)
}

// fetchTitle has stock ffmpeg fetch a layout's whole title as user, as
// fast as it can.
func fetchTitle(t *testing.T, p *proxy, layout, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-headers", "X-User-Id: "+user+"\r\n", "-i", p.url(testmedia.Entry[layout]),
		"-c", "copy", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: ffmpeg: %v\n%s", layout, err, out)
	}
}

// TestADownloadCutShortCountsWhatItGot: a progressive download that ends
// partway (the origin drops the connection halfway through the file here;
// a player stopping to seek ends it so too) still gave the player the
// media it read, and the stream's lease follows that media: carried past
// the grace, through the half of the title sent.
func TestADownloadCutShortCountsWhatItGot(t *testing.T) {
	const grace = 6 * time.Second
	dir := testmedia.Dir(t)
	file, err := os.ReadFile(filepath.Join(dir, "mp4", "video.mp4"))
	if err != nil {
		t.Fatal(err)
	}
	media := testmedia.Origin(dir)
	origin := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/video.mp4") || r.Header.Get("Range") != "" {
			media.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Content-Length", strconv.Itoa(len(file)))
		w.Write(file[:len(file)/2])
		http.NewResponseController(w).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}))
	p := mediaSiteWith(t, origin.Addr, fmt.Sprintf("lease %v", grace))
	resp, body := p.do(http.MethodGet, testmedia.Entry["mp4"], "halfway")
	if resp.StatusCode != http.StatusOK || len(body) >= len(file) {
		t.Fatalf("the download: %s, %d bytes of %d; want 200, cut short", resp.Status, len(body), len(file))
	}
	// The keepalive carries the lease within a renewal interval.
	for deadline := time.Now().Add(3 * grace); ; time.Sleep(100 * time.Millisecond) {
		left, n := leaseLeft(p, "halfway")
		if n == 1 && left > titleLength/3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams, lease running %v more; want 1, carried through the half of the title sent (%v)", n, left.Round(time.Millisecond), titleLength/2)
		}
	}
}
