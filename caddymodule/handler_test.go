package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const connectionSite = `
	route /slow/* {
		stream_limit {
			list_path /slow/streams
		}
		reverse_proxy {upstream}
	}
	route /cut/* {
		stream_limit {
			zone cut
			limit 1
		}
		reverse_proxy {upstream}
	}
	route /short/* {
		stream_limit {
			zone short
			limit 1
			lease 2s
		}
		reverse_proxy {upstream}
	}
	route /down/* {
		stream_limit {
			zone down
			limit 1
		}
		reverse_proxy 127.0.0.1:1
	}
`

// admits reports whether a start for user is admitted right now, and
// releases it at once when it is.
func (p *proxy) admits(path, user string) bool {
	p.t.Helper()
	s := p.open(path, user)
	defer s.cancel()
	return s.resp.StatusCode == http.StatusOK
}

func TestConnectionModeLimitsConcurrentStreams(t *testing.T) {
	p := startCaddy(t, connectionSite)

	var live []*liveStream
	for i := range 3 {
		s := p.open("/slow/video.ts", "alice")
		if s.resp.StatusCode != http.StatusOK || s.resp.Header.Get(StreamIDHeader) == "" {
			t.Fatalf("stream %d: %s, Stream-Id %q", i+1, s.resp.Status, s.resp.Header.Get(StreamIDHeader))
		}
		live = append(live, s)
	}

	resp, body := p.do(http.MethodGet, "/slow/video.ts", "alice")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth stream: %s %s, want 429", resp.Status, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("fourth stream: Retry-After %q", ra)
	}
	if got := decodeJSON(t, body); got["error"] != "stream_limit_exceeded" || got["limit"] != 3.0 || got["active"] != 3.0 {
		t.Fatalf("fourth stream body: %v", got)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("refusal Content-Type %q", resp.Header.Get("Content-Type"))
	}

	if !p.admits("/slow/video.ts", "bob") {
		t.Fatal("another user was refused while alice was at her limit")
	}

	live[0].cancel()
	eventually(t, "the slot of a departed client is free", func() bool {
		s := p.open("/slow/video.ts", "alice")
		if s.resp.StatusCode != http.StatusOK {
			s.cancel()
			return false
		}
		return true
	})
	if r, _ := p.do(http.MethodGet, "/slow/video.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth after reuse: %s, want 429", r.Status)
	}
}

func TestConnectionModeRenewsLeaseOfLongRequests(t *testing.T) {
	p := startCaddy(t, connectionSite)
	s := p.open("/short/slow/v.ts", "erin")
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("start: %s", s.resp.Status)
	}
	// The request outlives its 2s lease several times over; its keepalive
	// holds the slot all along.
	for i := range 25 {
		time.Sleep(200 * time.Millisecond)
		if r, _ := p.do(http.MethodGet, "/short/v.ts", "erin"); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("check %d: a second start got %s while the long request holds the only slot", i, r.Status)
		}
	}
	select {
	case err := <-s.done:
		t.Fatalf("long request ended: %v", err)
	default:
	}
	s.cancel()
	eventually(t, "the long request's slot is freed when it ends", func() bool { return p.admits("/short/slow/v.ts", "erin") })
}

func TestConnectionModeFreesSlotWhenUpstreamFails(t *testing.T) {
	p := startCaddy(t, connectionSite)

	// The origin dies mid-body: reverse_proxy aborts with http.ErrAbortHandler.
	for i := range 3 {
		s := p.open("/cut/video.ts", "carol")
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("cut stream %d: %s", i, s.resp.Status)
		}
		if err := <-s.done; err == nil {
			t.Fatalf("cut stream %d ended cleanly; the origin should have broken it", i)
		}
		eventually(t, "the slot of an aborted stream is free", func() bool {
			r, _ := p.do(http.MethodGet, "/cut/probe", "carol")
			return r.StatusCode == http.StatusOK
		})
	}

	// The origin is unreachable: reverse_proxy answers 502.
	for range 3 {
		if r, _ := p.do(http.MethodGet, "/down/video.ts", "dave"); r.StatusCode != http.StatusBadGateway {
			t.Fatalf("unreachable origin: %s, want 502 (the slot was not freed if 429)", r.Status)
		}
	}
}

const sessionSite = `
	route /s/* {
		stream_limit {
			mode session
			list_path /s/streams
		}
		reverse_proxy {upstream}
	}
	route /evict/* {
		stream_limit {
			mode session
			zone evict
			on_limit evict_oldest
		}
		reverse_proxy {upstream}
	}
	route /evict-conn/* {
		stream_limit {
			zone evict-conn
			on_limit evict_oldest
		}
		reverse_proxy {upstream}
	}
`

// start begins a session stream and returns its id.
func (p *proxy) start(path, user string) string {
	p.t.Helper()
	resp, body := p.do(http.MethodGet, path, user)
	id := resp.Header.Get(StreamIDHeader)
	if resp.StatusCode != http.StatusOK || id == "" {
		p.t.Fatalf("start %s for %s: %s %q, Stream-Id %q", path, user, resp.Status, body, id)
	}
	return id
}

func (p *proxy) listed(path, user string) []any {
	p.t.Helper()
	resp, body := p.do(http.MethodGet, path, user)
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("list: %s %s", resp.Status, body)
	}
	streams, _ := decodeJSON(p.t, body)["streams"].([]any)
	return streams
}

func TestSessionModeContinuesStreamsByID(t *testing.T) {
	p := startCaddy(t, sessionSite)
	ids := []string{p.start("/s/a.m3u8", "alice"), p.start("/s/a.m3u8", "alice"), p.start("/s/a.m3u8", "alice")}

	// Continuations, by header and by query, take no new slot.
	for i := range 10 {
		id := ids[i%3]
		resp, body := p.do(http.MethodGet, "/s/seg.ts", "alice", StreamIDHeader, id)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(StreamIDHeader) != id {
			t.Fatalf("continuation by header: %s %s", resp.Status, body)
		}
		resp, body = p.do(http.MethodGet, "/s/seg.ts?stream_id="+id, "alice")
		if resp.StatusCode != http.StatusOK || body != "ok /s/seg.ts" {
			t.Fatalf("continuation by query: %s %s", resp.Status, body)
		}
	}
	if r, _ := p.do(http.MethodGet, "/s/a.m3u8", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth start: %s, want 429", r.Status)
	}
	if n := len(p.listed("/s/streams", "alice")); n != 3 {
		t.Fatalf("listed %d streams, want 3", n)
	}

	// Continuations renew the lease: one kept busy past several leases keeps
	// its slot while the idle ones lapse. Time is the store's clock, moved
	// by the test.
	for range 4 {
		advance(t, 20*time.Second) // past a third of the 30s lease: renew
		if r, _ := p.do(http.MethodGet, "/s/seg.ts", "alice", StreamIDHeader, ids[0]); r.StatusCode != http.StatusOK {
			t.Fatalf("busy stream refused: %s", r.Status)
		}
		for range 3 { // coalesced: no store call
			if r, _ := p.do(http.MethodGet, "/s/seg.ts", "alice", StreamIDHeader, ids[0]); r.StatusCode != http.StatusOK {
				t.Fatalf("busy stream refused: %s", r.Status)
			}
		}
	}
	if l := p.listed("/s/streams", "alice"); len(l) != 1 || l[0].(map[string]any)["id"] != ids[0] {
		t.Fatalf("after renewals: %v, want only %s", l, ids[0])
	}

	// A lapsed id comes back under the same id while a slot is free...
	resp, _ := p.do(http.MethodGet, "/s/seg.ts", "alice", StreamIDHeader, ids[1])
	if resp.StatusCode != http.StatusOK || resp.Header.Get(StreamIDHeader) != ids[1] {
		t.Fatalf("lapsed stream's return: %s, Stream-Id %q", resp.Status, resp.Header.Get(StreamIDHeader))
	}
	// ...and is refused as at the limit when none is.
	p.start("/s/a.m3u8", "alice")
	resp, body := p.do(http.MethodGet, "/s/seg.ts", "alice", StreamIDHeader, ids[2])
	if resp.StatusCode != http.StatusTooManyRequests || decodeJSON(t, body)["error"] != "stream_limit_exceeded" {
		t.Fatalf("lapsed stream's return at the limit: %s %s", resp.Status, body)
	}
}

func TestSessionModeDelete(t *testing.T) {
	p := startCaddy(t, sessionSite)
	ids := []string{p.start("/s/a.m3u8", "alice"), p.start("/s/a.m3u8", "alice"), p.start("/s/a.m3u8", "alice")}
	bobs := p.start("/s/a.m3u8", "bob")
	before := p.origin.Hits("/s/a.m3u8")

	cases := []struct {
		name   string
		user   string
		id     string
		status int
		error  string
	}{
		{"another user's stream", "alice", bobs, http.StatusNotFound, "stream_not_found"},
		{"an unknown stream", "alice", "6f1c1c1e-2b4a-4c55-9d7e-2f4a8d9b0c11", http.StatusNotFound, "stream_not_found"},
		{"no stream id", "alice", "", http.StatusBadRequest, "missing_stream_id"},
		{"a malformed id", "alice", "not-a-uuid", http.StatusBadRequest, "bad_stream_id"},
	}
	for _, c := range cases {
		var hdr []string
		if c.id != "" {
			hdr = []string{StreamIDHeader, c.id}
		}
		resp, body := p.do(http.MethodDelete, "/s/a.m3u8", c.user, hdr...)
		if resp.StatusCode != c.status || decodeJSON(t, body)["error"] != c.error {
			t.Errorf("DELETE %s: %s %s, want %d %s", c.name, resp.Status, body, c.status, c.error)
		}
	}
	if n := len(p.listed("/s/streams", "bob")); n != 1 {
		t.Fatalf("bob's stream after alice's DELETE: %d listed, want 1", n)
	}

	resp, body := p.do(http.MethodDelete, "/s/a.m3u8", "alice", StreamIDHeader, ids[1])
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE own stream: %s %s", resp.Status, body)
	}
	resp, _ = p.do(http.MethodDelete, "/s/a.m3u8?stream_id="+ids[2], "alice")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE own stream by query: %s", resp.Status)
	}
	if p.origin.Hits("/s/a.m3u8") != before {
		t.Fatal("a DELETE reached the origin")
	}
	p.start("/s/a.m3u8", "alice")
	p.start("/s/a.m3u8", "alice")
	if r, _ := p.do(http.MethodGet, "/s/a.m3u8", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("start after refilling: %s, want 429", r.Status)
	}
}

func TestEvictOldest(t *testing.T) {
	p := startCaddy(t, sessionSite)

	t.Run("session", func(t *testing.T) {
		ids := []string{p.start("/evict/a.m3u8", "alice"), p.start("/evict/a.m3u8", "alice"), p.start("/evict/a.m3u8", "alice")}
		newest := p.start("/evict/a.m3u8", "alice")
		resp, body := p.do(http.MethodGet, "/evict/seg.ts", "alice", StreamIDHeader, ids[0])
		if resp.StatusCode != http.StatusConflict || decodeJSON(t, body)["error"] != "stream_revoked" {
			t.Fatalf("evicted stream's next request: %s %s, want 409 stream_revoked", resp.Status, body)
		}
		for _, id := range append(ids[1:], newest) {
			if r, _ := p.do(http.MethodGet, "/evict/seg.ts", "alice", StreamIDHeader, id); r.StatusCode != http.StatusOK {
				t.Fatalf("surviving stream %s: %s", id, r.Status)
			}
		}
	})

	t.Run("connection", func(t *testing.T) {
		var live []*liveStream
		for range 3 {
			live = append(live, p.open("/evict-conn/slow/v.ts", "alice"))
			time.Sleep(5 * time.Millisecond) // distinct start times
		}
		newest := p.open("/evict-conn/slow/v.ts", "alice")
		if newest.resp.StatusCode != http.StatusOK {
			t.Fatalf("evicting start: %s", newest.resp.Status)
		}
		select {
		case <-live[0].done:
		case <-time.After(20 * time.Second):
			t.Fatal("the evicted live request was not cut")
		}
		for i, s := range append(live[1:], newest) {
			select {
			case err := <-s.done:
				t.Fatalf("surviving stream %d was cut: %v", i, err)
			default:
			}
		}
	})
}

func TestLimitFromPlaceholder(t *testing.T) {
	p := startCaddy(t, `
	route /plan/* {
		stream_limit {
			mode session
			limit {http.request.header.X-Plan-Streams}
		}
		reverse_proxy {upstream}
	}`)
	plan := func(user, streams string) int {
		resp, _ := p.do(http.MethodGet, "/plan/a.m3u8", user, "X-Plan-Streams", streams)
		return resp.StatusCode
	}
	if plan("basic", "1") != http.StatusOK || plan("basic", "1") != http.StatusTooManyRequests {
		t.Fatal("a plan of 1 stream did not admit exactly one")
	}
	for i := range 5 {
		if code := plan("family", "5"); code != http.StatusOK {
			t.Fatalf("family plan start %d: %d", i+1, code)
		}
	}
	if plan("family", "5") != http.StatusTooManyRequests {
		t.Fatal("family plan admitted a sixth stream")
	}
	// No plan header: the default limit, 3.
	for i := range 3 {
		if r, _ := p.do(http.MethodGet, "/plan/a.m3u8", "noplan"); r.StatusCode != http.StatusOK {
			t.Fatalf("start %d without a plan: %s", i+1, r.Status)
		}
	}
	if r, _ := p.do(http.MethodGet, "/plan/a.m3u8", "noplan"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth start without a plan: %s, want 429", r.Status)
	}
	before := p.origin.Hits("/plan/a.m3u8")
	for _, bad := range []string{"many", "-1", "2.5", "1e3"} {
		resp, body := p.do(http.MethodGet, "/plan/a.m3u8", "odd", "X-Plan-Streams", bad)
		if resp.StatusCode != http.StatusInternalServerError || decodeJSON(t, body)["error"] != "bad_limit" {
			t.Errorf("limit %q: %s %s, want 500 bad_limit", bad, resp.Status, body)
		}
	}
	if p.origin.Hits("/plan/a.m3u8") != before {
		t.Fatal("a request with an unusable limit reached the origin")
	}
}

func TestZonesShareOrSeparateCounts(t *testing.T) {
	p := startCaddy(t, `
	route /live/* {
		stream_limit {
			mode session
			zone tv
			limit 2
		}
		reverse_proxy {upstream}
	}
	route /catchup/* {
		stream_limit {
			mode session
			zone tv
			limit 2
		}
		reverse_proxy {upstream}
	}
	route /vod/* {
		stream_limit {
			mode session
			zone vod
			limit 2
		}
		reverse_proxy {upstream}
	}`)
	p.start("/live/a.m3u8", "alice")
	p.start("/catchup/a.m3u8", "alice")
	if r, _ := p.do(http.MethodGet, "/live/a.m3u8", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third start across one zone: %s, want 429", r.Status)
	}
	p.start("/vod/a.m3u8", "alice")
	p.start("/vod/a.m3u8", "alice")
}

func TestBadInput(t *testing.T) {
	p := startCaddy(t, `
	route /q/* {
		stream_limit {
			mode session
			limit 1
			key {http.request.uri.query.user}
		}
		reverse_proxy {upstream}
	}`)
	before := p.origin.Hits("/q/a.m3u8")
	for _, c := range []struct {
		name   string
		query  string
		hdr    []string
		status int
		error  string
	}{
		{"no user", "", nil, http.StatusUnauthorized, "missing_user"},
		{"empty user", "user=", nil, http.StatusUnauthorized, "missing_user"},
		{"user over 512 bytes", "user=" + strings.Repeat("u", 513), nil, http.StatusBadRequest, "bad_user"},
		{"malformed id", "user=x", []string{StreamIDHeader, "zzz"}, http.StatusBadRequest, "bad_stream_id"},
		{"id with braces", "user=x", []string{StreamIDHeader, "{6f1c1c1e-2b4a-4c55-9d7e-2f4a8d9b0c11}"}, http.StatusBadRequest, "bad_stream_id"},
		{"truncated id", "user=x&stream_id=6f1c1c1e-2b4a-4c55-9d7e-2f4a8d9b0c1", nil, http.StatusBadRequest, "bad_stream_id"},
	} {
		var hdr []string
		hdr = append(hdr, c.hdr...)
		resp, body := p.do(http.MethodGet, "/q/a.m3u8?"+c.query, "", hdr...)
		if resp.StatusCode != c.status || decodeJSON(t, body)["error"] != c.error {
			t.Errorf("%s: %s %s, want %d %s", c.name, resp.Status, body, c.status, c.error)
		}
	}
	if p.origin.Hits("/q/a.m3u8") != before {
		t.Fatal("a refused request reached the origin")
	}

	// Users whose keys differ only in odd bytes are different users: each
	// gets its own single slot.
	users := []string{"{a}", "a", "a}", "{a", "a:b", "a:b:", ":a:b", "a\nb", "a\x00b", "a b", "ä", strings.Repeat("u", 512), strings.Repeat("u", 511) + "v"}
	for _, u := range users {
		if r, body := p.do(http.MethodGet, "/q/a.m3u8?user="+url.QueryEscape(u), ""); r.StatusCode != http.StatusOK {
			t.Fatalf("user %q: %s %s, want its own first slot", u, r.Status, body)
		}
	}
	for _, u := range users {
		if r, _ := p.do(http.MethodGet, "/q/a.m3u8?user="+url.QueryEscape(u), ""); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("user %q second start: %s, want 429", u, r.Status)
		}
	}
}

func TestConcurrentStartsAdmitExactlyTheLimit(t *testing.T) {
	p := startCaddy(t, connectionSite)
	for round := range 20 {
		user := fmt.Sprintf("racer-%d", round)
		var wg sync.WaitGroup
		codes := make(chan int, 200)
		var mu sync.Mutex
		var held []*liveStream
		start := make(chan struct{})
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				req, _ := http.NewRequest(http.MethodGet, p.url("/slow/v.ts"), nil)
				req.Header.Set("X-User-Id", user)
				req, cancel := withCancel(req)
				resp, err := client.Do(req)
				if err != nil {
					cancel()
					t.Error(err)
					return
				}
				codes <- resp.StatusCode
				mu.Lock()
				held = append(held, &liveStream{resp: resp, cancel: func() { cancel(); resp.Body.Close() }})
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		close(codes)
		admitted := 0
		for c := range codes {
			switch c {
			case http.StatusOK:
				admitted++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("round %d: unexpected status %d", round, c)
			}
		}
		for _, s := range held {
			s.cancel()
		}
		if admitted != 3 {
			t.Fatalf("round %d: %d of 200 simultaneous starts admitted, want exactly 3", round, admitted)
		}
	}
}

func TestHandleErrorsReshapesRefusals(t *testing.T) {
	p := startCaddy(t, `
	stream_limit {
		mode session
		limit 1
	}
	reverse_proxy {upstream}
	handle_errors 429 {
		respond "watching on {http.stream_limit.active} of {http.stream_limit.limit} screens; retry in {http.stream_limit.retry_after}s" 429
	}`)
	p.start("/a.m3u8", "alice")
	resp, body := p.do(http.MethodGet, "/a.m3u8", "alice")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.HasPrefix(body, "watching on 1 of 1 screens; retry in ") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("reshaped refusal: %s %q Retry-After %q", resp.Status, body, resp.Header.Get("Retry-After"))
	}
	if resp, body = p.do(http.MethodGet, "/a.m3u8", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("missing user through handle_errors: %s %q", resp.Status, body)
	}
}

func TestDryRunRefusesNothing(t *testing.T) {
	p := startCaddy(t, `
	stream_limit {
		mode session
		limit 1
		on_limit evict_oldest
		dry_run
		list_path /streams
	}
	reverse_proxy {upstream}`)
	first := p.start("/a.m3u8", "alice")
	const counter = `caddy_stream_limit_dry_run_denied_total{zone="default"}`
	before := p.scrape()[counter]
	for range 3 {
		resp, body := p.do(http.MethodGet, "/a.m3u8", "alice")
		if resp.StatusCode != http.StatusOK || body != "ok /a.m3u8" || resp.Header.Get("Stream-Limit-Dry-Run") != "stream_limit_exceeded" {
			t.Fatalf("start over the limit in dry run: %s %q, header %q", resp.Status, body, resp.Header.Get("Stream-Limit-Dry-Run"))
		}
	}
	// Nothing was evicted, and only the admitted stream holds a slot.
	if r, _ := p.do(http.MethodGet, "/seg.ts", "alice", StreamIDHeader, first); r.StatusCode != http.StatusOK || r.Header.Get("Stream-Limit-Dry-Run") != "" {
		t.Fatalf("first stream after dry-run refusals: %s", r.Status)
	}
	if l := p.listed("/streams", "alice"); len(l) != 1 {
		t.Fatalf("dry run took %d slots, want 1", len(l))
	}
	if got := p.scrape()[counter] - before; got != 3 {
		t.Fatalf("dry-run refusals counted: %v, want 3", got)
	}
}

func TestDeleteCutsTheStreamInFlight(t *testing.T) {
	p := startCaddy(t, connectionSite)
	s := p.open("/short/slow/v.ts", "frank")
	id := s.resp.Header.Get(StreamIDHeader)
	if resp, body := p.do(http.MethodDelete, "/short/v.ts", "frank", StreamIDHeader, id); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE of a live connection stream: %s %s", resp.Status, body)
	}
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the closed stream's request was not cut")
	}
	if !p.admits("/short/slow/v.ts", "frank") {
		t.Fatal("the closed stream's slot was not freed")
	}
}

func TestForeignAndForgedStreamIDsAreRefused(t *testing.T) {
	p := startCaddy(t, sessionSite)
	alices := p.start("/s/a.m3u8", "alice")
	before := p.origin.Hits("/s/seg.ts")
	// Ids carry proof of their owner: Bob can neither continue, renew nor
	// close Alice's stream, and a made-up id is nobody's.
	for _, c := range []struct{ user, id, method string }{
		{"bob", alices, http.MethodGet},
		{"bob", alices, http.MethodDelete},
		{"alice", "6f1c1c1e-2b4a-4c55-9d7e-2f4a8d9b0c11", http.MethodGet},
		{"alice", "6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11", http.MethodGet},
	} {
		resp, body := p.do(c.method, "/s/seg.ts", c.user, StreamIDHeader, c.id)
		if resp.StatusCode != http.StatusNotFound || decodeJSON(t, body)["error"] != "stream_not_found" {
			t.Errorf("%s %s with %s: %s %s, want 404 stream_not_found", c.user, c.method, c.id, resp.Status, body)
		}
	}
	if p.origin.Hits("/s/seg.ts") != before {
		t.Fatal("a request with a foreign or forged id reached the origin")
	}
	if l := p.listed("/s/streams", "alice"); len(l) != 1 || l[0].(map[string]any)["id"] != alices {
		t.Fatalf("alice's streams after bob's requests: %v", l)
	}
	if l := p.listed("/s/streams", "bob"); len(l) != 0 {
		t.Fatalf("bob holds streams: %v", l)
	}
}

func TestHandlersWithDifferentLeasesInOneZone(t *testing.T) {
	p := startCaddy(t, `
	route /long/* {
		stream_limit {
			mode session
			zone tv
			limit 1
			lease 30s
		}
		reverse_proxy {upstream}
	}
	route /short/* {
		stream_limit {
			mode session
			zone tv
			limit 1
			lease 3s
		}
		reverse_proxy {upstream}
	}`)
	id := p.start("/long/a.m3u8", "alice")
	advance(t, 31*time.Second) // the 30s lease lapses
	if r, _ := p.do(http.MethodGet, "/short/seg.ts", "alice", StreamIDHeader, id); r.StatusCode != http.StatusOK {
		t.Fatalf("re-admission through the short-lease handler: %s", r.Status)
	}
	// The short lease must be renewed on its own schedule, not the long
	// one's: two seconds on, the next segment renews it.
	advance(t, 2*time.Second)
	if r, _ := p.do(http.MethodGet, "/short/seg.ts", "alice", StreamIDHeader, id); r.StatusCode != http.StatusOK {
		t.Fatalf("continuation: %s", r.Status)
	}
	advance(t, 2*time.Second)
	if r, _ := p.do(http.MethodGet, "/short/a.m3u8", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second start while the renewed stream holds the only slot: %s, want 429", r.Status)
	}
}
