package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// TestDeleteRacingFirstRequests closes a stream at the very moment its
// first requests arrive: a new stream has no state in this process yet, so
// a request whose store call came just before the revoke used to be served
// on, and to make the next ones "fresh", for up to a renewal interval after
// the 204, while the slot it stood on was free for new starts. Now a close
// leaves the id revoked here whatever was seen of it: no request of the
// closed stream is served after the 204, and its user's fresh starts are
// the only streams the origin serves. Both stores, 50 rounds each.
func TestDeleteRacingFirstRequests(t *testing.T) {
	onEachStore(t, func(t *testing.T, store, storeBlock string) {
		o := origintest.StartWith(t, http.HandlerFunc(origintest.Trickle))
		p := startCaddy(t, fmt.Sprintf(`
	route /v/* {
		stream_limit {
			mode session
			path_token
			%s
		}
		reverse_proxy %s
	}`, storeBlock, o.Addr))
		noRedirect := &http.Client{
			Transport:     &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		for round := range 50 {
			user := fmt.Sprintf("racer%d", round)
			title := fmt.Sprintf("/v/t%d/", round)
			req, _ := http.NewRequest(http.MethodGet, p.url(title+"slow.ts"), nil)
			req.Header.Set("X-User-Id", user)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusTemporaryRedirect || loc == "" {
				t.Fatalf("round %d: start answered %s", round, resp.Status)
			}
			tokenized := title + strings.TrimPrefix(loc, "./")

			var wg sync.WaitGroup
			gate := make(chan struct{})
			for range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest(http.MethodGet, p.url(tokenized), nil)
					req.Header.Set("X-User-Id", user)
					<-gate
					r, err := noRedirect.Do(req)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body) // until the stream is cut
					r.Body.Close()
				}()
			}
			var closed time.Time
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodDelete, p.url(tokenized), nil)
				req.Header.Set("X-User-Id", user)
				<-gate
				r, err := noRedirect.Do(req)
				if err != nil || r.StatusCode != http.StatusNoContent {
					t.Errorf("round %d: DELETE: %v %v", round, r, err)
					return
				}
				r.Body.Close()
				closed = time.Now()
			}()
			close(gate)
			// Every request of the closed stream ends: refused, or cut.
			// (Before the fix, some ran until the next renewal, 10 s on.)
			wg.Wait()
			if t.Failed() {
				return
			}
			// No request of it is served past the 204: the ones in flight
			// were cut before it was written. The origin may hear of a cut
			// a moment later, so "past" allows a second, a tenth of the
			// renewal interval that the old bug lasted for.
			eventually(t, "the origin stops serving the closed stream", func() bool { return o.Serving(title) == 0 })
			if last := o.LastEnd(title); last.After(closed.Add(time.Second)) {
				t.Fatalf("round %d: the origin served the closed stream until %v after the 204", round, last.Sub(closed))
			}
			// The slot is free: three fresh starts play, a fourth is refused,
			// and the origin serves those three alone.
			var fresh []*liveStream
			for i := range 3 {
				s := p.open(fmt.Sprintf("/v/fresh%d-%d/slow.ts", round, i), user)
				fresh = append(fresh, s)
				if s.resp.StatusCode != http.StatusOK {
					t.Fatalf("round %d: fresh start %d: %s", round, i, s.resp.Status)
				}
			}
			if r, _ := p.do(http.MethodGet, fmt.Sprintf("/v/fresh%d-3/slow.ts", round), user); r.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("round %d: fourth fresh start: %s, want 429", round, r.Status)
			}
			// (Every client of the closed stream has left, so a request of
			// it at the origin now is one Caddy gave up on, whose handler
			// started late on a loaded machine: it ends at its first write.
			// One that Caddy kept proxying would trickle on.)
			eventually(t, fmt.Sprintf("round %d: beside the 3 fresh streams the origin serves none of the closed one", round),
				func() bool { return o.Serving(title) == 0 })
			for _, s := range fresh {
				s.cancel()
			}
		}
	})
}

func TestDeleteIsNeverProxiedWhenTheStoreIsDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	p := startCaddy(t, `
	stream_limit {
		mode session
		store redis {
			address `+srv.Addr+`
			timeout 200ms
		}
	}
	reverse_proxy {upstream}`)
	resp, body := p.do(http.MethodDelete, "/a.m3u8", "alice", StreamIDHeader, "6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11")
	if resp.StatusCode != http.StatusServiceUnavailable || decodeJSON(t, body)["error"] != "store_unavailable" {
		t.Fatalf("DELETE with the store down: %s %s", resp.Status, body)
	}
	if p.origin.Hits("/a.m3u8") != 0 {
		t.Fatal("the DELETE reached the origin")
	}
}
