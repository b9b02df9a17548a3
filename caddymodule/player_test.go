package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests play the committed demo media through Caddy with real,
// unmodified players (ffmpeg's HLS and DASH demuxers) that know nothing of
// stream ids: only the user header is set.

const playerSite = `
	route /media/* {
		stream_limit {
			mode session
			path_token
			list_path /media/streams
		}
		reverse_proxy {upstream}
	}
	route /two/* {
		stream_limit {
			zone two
			mode session
			path_token
			limit 2
			list_path /two/streams
		}
		rewrite * /media/{http.request.uri.path.1}/{http.request.uri.path.2}
		reverse_proxy {upstream}
	}`

// needFFmpeg skips the test without ffmpeg, except under CI=true (.ci/run
// sets it), where it fails: there `make test` must have installed it.
func needFFmpeg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffmpeg is not installed (CI=true: required; make test installs it)")
		}
		t.Skip("ffmpeg is not installed (make test installs it)")
	}
}

// play runs ffmpeg on url as user; realTime plays at the media's pace.
// device, when set, is the player's address (X-Forwarded-For from the
// trusted proxy the tests stand for): players on one address with one
// User-Agent that open one title together are one client.
func play(ctx context.Context, url, user, device string, realTime bool) (string, error) {
	headers := "X-User-Id: " + user + "\r\n"
	if device != "" {
		headers += "X-Forwarded-For: " + device + "\r\n"
	}
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-headers", headers}
	if realTime {
		args = append(args, "-re")
	}
	args = append(args, "-i", url, "-c", "copy", "-f", "null", "-")
	out, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput()
	return string(out), err
}

func TestPlayersCarryTheStreamWithoutKnowingIt(t *testing.T) {
	needFFmpeg(t)
	p := startCaddy(t, playerSite)
	for _, media := range []string{"/media/hls/index.m3u8", "/media/dash/manifest.mpd"} {
		t.Run(media, func(t *testing.T) {
			if out, err := play(context.Background(), p.url(media), "solo", "", false); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, out)
			}
			// One playback, however many playlist and segment requests: one
			// stream, even for a user whose limit would refuse a second.
			if l := p.listed("/media/streams", "solo"); len(l) != 1 {
				t.Fatalf("one playback holds %d streams", len(l))
			}
			p.do(http.MethodDelete, "/media/x", "solo", StreamIDHeader, p.listed("/media/streams", "solo")[0].(map[string]any)["id"].(string))
		})
	}
	segments := 0
	for _, path := range p.origin.Paths() {
		if strings.Contains(path, PathTokenPrefix) {
			t.Fatalf("the origin saw a tokenized path: %s", path)
		}
		if strings.HasSuffix(path, ".ts") || strings.HasSuffix(path, ".m4s") {
			segments++
		}
	}
	if segments < 6 {
		t.Fatalf("the origin served %d segments: %v", segments, p.origin.Paths())
	}
}

func TestThreePlayersPlayTheFourthIsRefused(t *testing.T) {
	needFFmpeg(t)
	p := startCaddy(t, playerSite)
	for _, media := range []string{"/media/hls/index.m3u8", "/media/dash/manifest.mpd"} {
		t.Run(media, func(t *testing.T) {
			user := "family" + media
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make([]error, 4)
			outs := make([]string, 4)
			for i := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					outs[i], errs[i] = play(ctx, p.url(media), user, fmt.Sprintf("10.0.0.%d", i+1), true)
				}()
			}
			// A different user plays meanwhile.
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[3], errs[3] = play(ctx, p.url(media), "neighbour"+media, "10.0.1.1", true)
			}()
			eventually(t, "three playbacks started", func() bool { return len(p.listed("/media/streams", user)) == 3 })
			resp, body := p.do(http.MethodGet, media, user)
			if resp.StatusCode != http.StatusTooManyRequests || decodeJSON(t, body)["error"] != "stream_limit_exceeded" {
				t.Fatalf("fourth player's first request: %s %s", resp.Status, body)
			}
			out, err := play(ctx, p.url(media), user, "10.0.0.4", false)
			if err == nil || !strings.Contains(out, "4XX") {
				t.Fatalf("a fourth ffmpeg played: %v\n%s", err, out)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("player %d: %v\n%s", i, err, outs[i])
				}
			}
		})
	}
}

// TestReopeningATitleIsOnePlayback: a client that opens the title it is
// playing again (mpv's demuxer after its stream layer, streamlink's play
// after its probe, a reload) continues its stream instead of taking
// another slot; another device is another screen, and at the limit (2) a
// third is refused. Each playback fetches its segments with its tokens.
func TestReopeningATitleIsOnePlayback(t *testing.T) {
	p := startCaddy(t, playerSite)
	first := p.startFrom("/two/hls/index.m3u8", "twin", "10.0.3.1")
	again := p.startFrom("/two/hls/index.m3u8", "twin", "10.0.3.1")
	if again.id != first.id {
		t.Fatalf("the same client opening the title again got stream %s, want its stream %s", again.id, first.id)
	}
	other := p.startFrom("/two/hls/index.m3u8", "twin", "10.0.3.2")
	if other.id == first.id {
		t.Fatal("another device got the first device's stream")
	}
	for _, pb := range []playback{first, other} {
		for seg := range 6 {
			u := pb.uri(t, fmt.Sprintf("seg%02d.ts", seg))
			if r, body := p.do(http.MethodGet, u, "twin"); r.StatusCode != http.StatusOK || r.Header.Get(StreamIDHeader) != pb.id {
				t.Fatalf("segment %s: %s %s", u, r.Status, body)
			}
		}
	}
	if l := p.listed("/two/streams", "twin"); len(l) != 2 {
		t.Fatalf("two devices with all their segments hold %d streams, want 2", len(l))
	}
	if r, _ := p.do(http.MethodGet, "/two/hls/index.m3u8", "twin", "X-Forwarded-For", "10.0.3.3"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third device at limit 2: %s", r.Status)
	}
}

// playback is a playback a test started as a player does.
type playback struct {
	url  string // where it landed (path and query): the tokenized URL, or the one asked for when the manifest was served at once
	id   string // its stream id, from the Stream-Id header
	body string // what it was served there
	base *url.URL
}

// startFrom starts a playback of path as user on device (an address sent
// as X-Forwarded-For; "" for the test's own), following a redirect.
func (p *proxy) startFrom(path, user, device string) playback {
	p.t.Helper()
	hdr := []string{}
	if device != "" {
		hdr = append(hdr, "X-Forwarded-For", device)
	}
	resp, body := p.do(http.MethodGet, path, user, hdr...)
	id := resp.Header.Get(StreamIDHeader)
	if resp.StatusCode != http.StatusOK || id == "" {
		p.t.Fatalf("start of %s: %s at %s: %s", path, resp.Status, resp.Request.URL, body)
	}
	return playback{url: resp.Request.URL.RequestURI(), id: id, body: body, base: resp.Request.URL}
}

// tokenized starts a playback of path as user and returns the URL it
// landed at.
func (p *proxy) tokenized(path, user string) string {
	p.t.Helper()
	return p.startFrom(path, user, "").url
}

// uri is the URI in the playback's manifest (resolved: path and query)
// whose path ends in name.
func (pb playback) uri(t testing.TB, name string) string {
	t.Helper()
	for _, line := range strings.Split(pb.body, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, err := pb.base.Parse(line)
		if err == nil && strings.HasSuffix(u.Path, "/"+name) {
			return u.RequestURI()
		}
	}
	t.Fatalf("no %s in the manifest at %s:\n%s", name, pb.url, pb.body)
	return ""
}

// streamIDOf is the stream id in a tokenized URL's query or path, or "".
func streamIDOf(u string) string {
	if _, q, ok := strings.Cut(u, StreamIDQuery+"="); ok {
		return strings.SplitN(q, ".", 2)[0]
	}
	if _, t, ok := strings.Cut(u, "/"+PathTokenPrefix); ok {
		return strings.SplitN(strings.SplitN(t, "/", 2)[0], ".", 2)[0]
	}
	return ""
}

func TestStoppedAndPausedPlayers(t *testing.T) {
	p := startCaddy(t, playerSite)
	a := p.startFrom("/two/hls/index.m3u8", "pauser", "10.0.2.1")
	b := p.startFrom("/two/hls/index.m3u8", "pauser", "10.0.2.2")
	aSeg, bSeg := a.uri(t, "seg01.ts"), b.uri(t, "seg01.ts")
	seg := func(uri string) int {
		r, _ := p.do(http.MethodGet, uri, "pauser")
		return r.StatusCode
	}

	// Player b stops (it just goes silent); a pauses. Past the lease both
	// slots are free again (neither was served media to play).
	advance(t, 31*time.Second)
	if l := p.listed("/two/streams", "pauser"); len(l) != 0 {
		t.Fatalf("streams silent past the lease still held: %v", l)
	}
	// a resumes: re-admitted under its id while a slot is free.
	if code := seg(aSeg); code != http.StatusOK {
		t.Fatalf("resumed player: %d", code)
	}
	if l := p.listed("/two/streams", "pauser"); len(l) != 1 || l[0].(map[string]any)["id"] != a.id {
		t.Fatalf("after resuming: %v, want a's id", l)
	}
	// A new playback takes the other slot; b, back from its pause, is
	// refused cleanly as at the limit.
	p.startFrom("/two/hls/index.m3u8", "pauser", "10.0.2.3")
	if code := seg(bSeg); code != http.StatusTooManyRequests {
		t.Fatalf("paused player returning at the limit: %d, want 429", code)
	}
}

func TestProgressiveRangeRequestsHoldOneSlot(t *testing.T) {
	p := startCaddy(t, `
	route /media/* {
		stream_limit {
			mode session
			path_token
			limit 1
			list_path /media/streams
		}
		reverse_proxy {upstream}
	}`)
	get := func(path, rng string) (int, int) {
		req, _ := http.NewRequest(http.MethodGet, p.url(path), nil)
		req.Header.Set("X-User-Id", "viewer")
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, 0
		}
		defer resp.Body.Close()
		n, _ := io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, int(n)
	}
	// The first range request is the start; the player follows the redirect
	// and asks every later range of the tokenized URL.
	req, _ := http.NewRequest(http.MethodGet, p.url("/media/mp4/video.mp4"), nil)
	req.Header.Set("X-User-Id", "viewer")
	req.Header.Set("Range", "bytes=0-1023")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("first range: %v %v", err, resp)
	}
	resp.Body.Close()
	video := resp.Request.URL.Path
	for i := range 5 {
		if code, n := get(video, fmt.Sprintf("bytes=%d-%d", 1024+i*4096, 1024+(i+1)*4096-1)); code != http.StatusPartialContent || n != 4096 {
			t.Fatalf("sequential range %d: %d, %d bytes", i, code, n)
		}
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _ := get(video, fmt.Sprintf("bytes=%d-", i*20000)); code != http.StatusPartialContent {
				t.Errorf("overlapping range %d: %d", i, code)
			}
		}()
	}
	wg.Wait()
	if l := p.listed("/media/streams", "viewer"); len(l) != 1 {
		t.Fatalf("one progressive playback holds %d slots", len(l))
	}
}

func TestBadPathTokens(t *testing.T) {
	p := startCaddy(t, `
	route /media/* {
		stream_limit {
			mode session
			path_token
			limit 1
			on_limit evict_oldest
			list_path /media/streams
		}
		reverse_proxy {upstream}
	}`)
	alices := p.startFrom("/media/hls/index.m3u8", "alice", "")
	aliceID := alices.id
	alicesSeg := alices.uri(t, "seg00.ts")
	for _, c := range []struct {
		name, user, path, method string
		status                   int
		error                    string
	}{
		{"malformed token", "alice", "/media/hls/~sl-zzz/seg00.ts", http.MethodGet, http.StatusBadRequest, "bad_stream_id"},
		{"truncated token", "alice", "/media/hls/~sl-" + aliceID[:30] + "/seg00.ts", http.MethodGet, http.StatusBadRequest, "bad_stream_id"},
		{"empty token", "alice", "/media/hls/~sl-/seg00.ts", http.MethodGet, http.StatusBadRequest, "bad_stream_id"},
		{"forged token", "alice", "/media/hls/~sl-6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11/seg00.ts", http.MethodGet, http.StatusNotFound, "stream_not_found"},
		{"another user's token", "bob", alicesSeg, http.MethodGet, http.StatusNotFound, "stream_not_found"},
		{"another user's token, DELETE", "bob", alicesSeg, http.MethodDelete, http.StatusNotFound, "stream_not_found"},
	} {
		resp, body := p.do(c.method, c.path, c.user)
		if resp.StatusCode != c.status || decodeJSON(t, body)["error"] != c.error {
			t.Errorf("%s: %s %s, want %d %s", c.name, resp.Status, body, c.status, c.error)
		}
	}

	// Evicted by a newer playback (on another device), the old token is
	// revoked: 409.
	newest := p.startFrom("/media/hls/index.m3u8", "alice", "10.0.4.1")
	newestURL, late := newest.uri(t, "seg00.ts"), newest.uri(t, "seg01.ts")
	if resp, body := p.do(http.MethodGet, alicesSeg, "alice"); resp.StatusCode != http.StatusConflict || decodeJSON(t, body)["error"] != "stream_revoked" {
		t.Fatalf("evicted token: %s %s, want 409 stream_revoked", resp.Status, body)
	}

	// DELETE of a tokenized URL closes that stream.
	if resp, body := p.do(http.MethodDelete, newestURL, "alice"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE of a tokenized URL: %s %s", resp.Status, body)
	}
	if l := p.listed("/media/streams", "alice"); len(l) != 0 {
		t.Fatalf("after DELETE: %v", l)
	}
	// A segment request of the closed stream still on its way is refused,
	// and takes no slot back.
	if resp, body := p.do(http.MethodGet, late, "alice"); resp.StatusCode != http.StatusConflict || decodeJSON(t, body)["error"] != "stream_revoked" {
		t.Fatalf("a late request of the closed stream: %s %s, want 409 stream_revoked", resp.Status, body)
	}
	if l := p.listed("/media/streams", "alice"); len(l) != 0 {
		t.Fatalf("the closed stream came back: %v", l)
	}
	for _, path := range p.origin.Paths() {
		if strings.Contains(path, "~sl") {
			t.Fatalf("the origin saw a token as a path: %s", path)
		}
	}
}

func TestPathTokensBehindRewritesProbesAndPreflights(t *testing.T) {
	p := startCaddy(t, `
	handle_path /video/* {
		rewrite * /media{path}
		stream_limit {
			mode session
			path_token
			limit 1
			list_path /media/streams
		}
		reverse_proxy {upstream}
	}`)
	// HEAD probes take no slot.
	req, _ := http.NewRequest(http.MethodHead, p.url("/video/hls/index.m3u8"), nil)
	req.Header.Set("X-User-Id", "alice")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("HEAD start: %v %v", err, resp)
	}
	// The redirect is relative to the URL the client asked for, whatever
	// handle_path and rewrite made of it.
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "./index.m3u8?"+StreamIDQuery+"=") {
		t.Fatalf("Location %q", loc)
	}
	// A GET start of a VOD playlist is served at once, rewritten, at the
	// URL the client asked for.
	started := p.startFrom("/video/hls/index.m3u8", "alice", "")
	if started.url != "/video/hls/index.m3u8" {
		t.Fatalf("the player landed on %s", started.url)
	}
	landed := started.uri(t, "seg00.ts")
	seg := landed
	if r, _ := p.do(http.MethodGet, seg, "alice"); r.StatusCode != http.StatusOK {
		t.Fatalf("segment behind handle_path: %s", r.Status)
	}

	// A CORS preflight of a tokenized URL reaches the origin without the
	// token; a path with two tokens is refused.
	if r, _ := p.do(http.MethodOptions, seg, "", "Origin", "https://player.example", "Access-Control-Request-Method", "GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("preflight: %s", r.Status)
	}
	id := streamIDOf(landed)
	if r, body := p.do(http.MethodGet, "/video/hls/"+PathTokenPrefix+id+"/"+PathTokenPrefix+"zzzz/seg00.ts", "alice"); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("two tokens: %s %s", r.Status, body)
	}
	for _, path := range p.origin.Paths() {
		if strings.Contains(path, "~sl") {
			t.Fatalf("the origin saw a token: %s", path)
		}
	}

}
