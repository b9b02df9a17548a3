package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

const reloadSite = `
	route /r/* {
		stream_limit {
			lease 2s
			list_path /r/streams
		}
		reverse_proxy {upstream}
	}`

func TestReloadKeepsLiveStreams(t *testing.T) {
	p := startCaddy(t, reloadSite)
	var live []*liveStream
	for range 3 {
		live = append(live, p.open("/r/slow/v.ts", "alice"))
	}
	held := func() int { return len(p.listed("/r/streams", "alice")) }

	changed := reloadSite + `
	route /extra/* {
		respond "a route that was not there before"
	}`
	for i, cfg := range []string{reloadSite, changed, reloadSite} {
		p.reload(cfg)
		// Outlive the 2s lease: the streams' keepalives, which belong to
		// their requests and not to the unloaded config, keep renewing.
		time.Sleep(2500 * time.Millisecond)
		if n := held(); n != 3 {
			t.Fatalf("reload %d: %d slots held, want exactly 3", i+1, n)
		}
		if r, _ := p.do(http.MethodGet, "/r/v.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("reload %d: fourth start %s, want 429", i+1, r.Status)
		}
	}
	for i, s := range live {
		select {
		case err := <-s.done:
			t.Fatalf("live stream %d ended during the reloads: %v", i, err)
		default:
		}
		s.cancel()
		want := 2 - i
		eventually(t, fmt.Sprintf("stream %d's slot is freed after the reloads", i), func() bool { return held() == want })
	}
	if !p.admits("/r/slow/v.ts", "alice") {
		t.Fatal("no slot free after every stream ended")
	}
}

// TestAbortPanicFreesSlot calls the handler directly with a next handler
// that aborts as reverse_proxy does on a broken upstream.
func TestAbortPanicFreesSlot(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Zone: "abort", Limit: "1"}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	abort := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { panic(http.ErrAbortHandler) })
	for i := range 3 {
		r := httptest.NewRequest(http.MethodGet, "/v.ts", nil)
		r.Header.Set("X-User-Id", "u")
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddyhttp.NewTestReplacer(r)))
		func() {
			defer func() {
				if v := recover(); v != http.ErrAbortHandler {
					t.Fatalf("request %d: recovered %v, want http.ErrAbortHandler passed through", i, v)
				}
			}()
			h.ServeHTTP(httptest.NewRecorder(), r, abort)
		}()
		leases, err := h.zone.store.List(context.Background(), lease.Key{Zone: "abort", User: "u"})
		if err != nil || len(leases) != 0 {
			t.Fatalf("after abort %d: %d leases held (%v), want 0", i, len(leases), err)
		}
	}
}
