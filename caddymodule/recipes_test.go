package caddymodule

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
)

// Each recipe in docs/recipes is a whole Caddyfile that OPERATIONS.md
// shows; here each one runs as written, with its addresses moved to free
// ports through the environment variables it reads.

func loadRecipe(t *testing.T, name string, env map[string]string) *proxy {
	t.Helper()
	p := &proxy{t: t, origin: newOrigin(t)}
	p.addr = loopback.Addr(t)
	p.admin = loopback.Addr(t)
	t.Setenv("SITE", p.addr)
	t.Setenv("ADMIN", p.admin)
	t.Setenv("ORIGIN", p.origin.Addr)
	for k, v := range env {
		t.Setenv(k, v)
	}
	b, err := os.ReadFile("../docs/recipes/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(adapt(t, string(b)), true); err != nil {
		t.Fatalf("running %s: %v", name, err)
	}
	t.Cleanup(func() { caddy.Stop() })
	return p
}

func TestRecipeBrandedRefusal(t *testing.T) {
	p := loadRecipe(t, "branded-refusal.caddyfile", nil)
	// Three screens (each its own User-Agent: one client opening a title
	// again is one playback), then a fourth.
	for n := range 3 {
		if r, body := p.do(http.MethodGet, "/hls/index.m3u8", "alice", "User-Agent", fmt.Sprintf("screen %d", n)); r.StatusCode != http.StatusOK {
			t.Fatalf("screen %d: %s %s", n, r.Status, body)
		}
	}
	resp, body := p.do(http.MethodGet, "/hls/index.m3u8", "alice", "User-Agent", "screen 4")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "already watching on 3 screens") ||
		!strings.Contains(body, "Your plan allows 3") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		resp.Header.Get("Retry-After") == "" {
		t.Fatalf("branded refusal: %s %v %q", resp.Status, resp.Header, body)
	}
	if resp, body = p.do(http.MethodGet, "/hls/index.m3u8", ""); resp.StatusCode != http.StatusUnauthorized || body != "401 missing_user" {
		t.Fatalf("other refusals: %s %q", resp.Status, body)
	}
}

func TestRecipeForwardAuth(t *testing.T) {
	// The auth service: "Authorization: Bearer <user>:<plan>" is a valid
	// session of <user> on a plan of <plan> streams.
	auth := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, plan, ok := strings.Cut(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), ":")
		if !ok || user == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-User-Id", user)
		w.Header().Set("X-Plan-Streams", plan)
	})).Addr
	p := loadRecipe(t, "forward-auth.caddyfile", map[string]string{"AUTH": auth})
	screens := 0
	get := func(token, forgedUser string) int {
		// Each request a screen of its own (one client opening a title
		// again is one playback).
		screens++
		hdr := []string{"Authorization", "Bearer " + token, "User-Agent", fmt.Sprintf("screen %d", screens)}
		resp, _ := p.do(http.MethodGet, "/hls/index.m3u8", forgedUser, hdr...)
		return resp.StatusCode
	}
	if code := get("", "mallory"); code != http.StatusUnauthorized {
		t.Fatalf("no session, own X-User-Id: %d, want 401 from the auth service", code)
	}
	if code := get("alice:1", ""); code != http.StatusOK {
		t.Fatalf("alice's first stream: %d", code)
	}
	if code := get("alice:1", ""); code != http.StatusTooManyRequests {
		t.Fatalf("alice's second stream on a 1-stream plan: %d", code)
	}
	// A client naming another user in X-User-Id is still counted as itself.
	if code := get("alice:1", "bob"); code != http.StatusTooManyRequests {
		t.Fatalf("alice posing as bob: %d, want alice's 429", code)
	}
	if code := get("bob:2", ""); code != http.StatusOK {
		t.Fatalf("bob: %d", code)
	}
}

func TestRecipeBasicAuth(t *testing.T) {
	p := loadRecipe(t, "basic-auth.caddyfile", nil)
	open := func(password string) (int, func()) {
		req, _ := http.NewRequest(http.MethodGet, p.url("/slow/v.ts"), nil)
		req.SetBasicAuth("alice", password)
		req, cancel := withCancel(req)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, func() { cancel(); resp.Body.Close() }
	}
	if code, stop := open("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	} else {
		stop()
	}
	for i := range 2 {
		code, stop := open("correct horse")
		defer stop()
		if code != http.StatusOK {
			t.Fatalf("stream %d: %d", i+1, code)
		}
	}
	if code, stop := open("correct horse"); code != http.StatusTooManyRequests {
		t.Fatalf("third stream of a 2-stream account: %d", code)
	} else {
		stop()
	}
}

func TestRecipeFailurePolicy(t *testing.T) {
	srv := redistest.Start(t)
	p := loadRecipe(t, "failure-policy.caddyfile", map[string]string{"REDIS": srv.Addr})
	held := p.open("/premium/slow/v.ts", "alice")
	if held.resp.StatusCode != http.StatusOK {
		t.Fatalf("premium stream: %s", held.resp.Status)
	}
	if r, _ := p.do(http.MethodGet, "/premium/v.ts", "alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second premium stream: %s", r.Status)
	}
	srv.Kill()
	if r, _ := p.do(http.MethodGet, "/live/v.ts", "alice"); r.StatusCode != http.StatusOK {
		t.Fatalf("live during the outage: %s, want 200 (allow)", r.Status)
	}
	if r, body := p.do(http.MethodGet, "/premium/v.ts", "bob"); r.StatusCode != http.StatusServiceUnavailable || decodeJSON(t, body)["error"] != "store_unavailable" {
		t.Fatalf("premium during the outage: %s %s, want 503 (deny)", r.Status, body)
	}
}

func TestRecipeTrustedIdentity(t *testing.T) {
	var seen []string
	origin := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("X-User-Id"))
	})).Addr
	p := loadRecipe(t, "trusted-identity.caddyfile", map[string]string{"ORIGIN": origin})
	start := func(claimed string) int {
		req, _ := http.NewRequest(http.MethodGet, p.url("/hls/index.m3u8"), nil)
		req.SetBasicAuth("alice", "correct horse")
		req.Header.Set("X-User-Id", claimed)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Alice claims to be someone else each time: she is counted as herself.
	for i := range 3 {
		if code := start(fmt.Sprintf("someone-%d", i)); code != http.StatusOK {
			t.Fatalf("start %d: %d", i, code)
		}
	}
	if code := start("someone-else"); code != http.StatusTooManyRequests {
		t.Fatalf("fourth start under a borrowed name: %d, want 429", code)
	}
	for _, u := range seen {
		if u != "alice" {
			t.Fatalf("the origin saw X-User-Id %q", u)
		}
	}
}
