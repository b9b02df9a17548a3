package caddymodule

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/streamlimit/caddy-streamlimit/internal/redistest"
	"github.com/streamlimit/caddy-streamlimit/lease"
)

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
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "./"+PathTokenPrefix) || !strings.HasSuffix(loc, "/index.m3u8") {
		t.Fatalf("Location %q", loc)
	}
	if c := resp.Header.Get("Set-Cookie"); !strings.Contains(c, "Path=/video/hls/") {
		t.Fatalf("cookie scoped to %q, want the client's /video/hls/", c)
	}
	landed := p.tokenized("/video/hls/index.m3u8", "alice")
	if !strings.HasPrefix(landed, "/video/hls/"+PathTokenPrefix) {
		t.Fatalf("the player landed on %s", landed)
	}
	seg := strings.Replace(landed, "index.m3u8", "seg00.ts", 1)
	if r, _ := p.do(http.MethodGet, seg, "alice"); r.StatusCode != http.StatusOK {
		t.Fatalf("segment behind handle_path: %s", r.Status)
	}

	// A CORS preflight of a tokenized URL reaches the origin without the
	// token; a path with two tokens is refused.
	if r, _ := p.do(http.MethodOptions, seg, "", "Origin", "https://player.example", "Access-Control-Request-Method", "GET"); r.StatusCode != http.StatusOK {
		t.Fatalf("preflight: %s", r.Status)
	}
	id := strings.TrimPrefix(strings.Split(landed, "/")[3], PathTokenPrefix)
	if r, body := p.do(http.MethodGet, "/video/hls/"+PathTokenPrefix+id+"/"+PathTokenPrefix+"zzzz/seg00.ts", "alice"); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("two tokens: %s %s", r.Status, body)
	}
	for _, path := range p.origin.paths() {
		if strings.Contains(path, "~sl") {
			t.Fatalf("the origin saw a token: %s", path)
		}
	}

	// A stale or foreign cookie does not break a segment request: it is a
	// start like any other (here: at the limit).
	req, _ = http.NewRequest(http.MethodGet, p.url("/video/hls/seg01.ts"), nil)
	req.Header.Set("X-User-Id", "bob")
	req.AddCookie(&http.Cookie{Name: StreamIDCookie, Value: id})
	resp, err = (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("segment with another user's cookie: %v %v, want a fresh start (307)", err, resp)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
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
	if p.origin.hit("/a.m3u8") != 0 {
		t.Fatal("the DELETE reached the origin")
	}
}

// TestSharedSecretSurvivesLostRedisData: after Redis loses its data, an
// instance that remembers the secret puts it back, and one that meets ids
// of a secret installed meanwhile adopts it without refusing its own.
func TestSharedSecretSurvivesLostRedisData(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	store, _ := lease.NewRedisStore(client, lease.RedisOptions{})
	z := &zone{name: "z", store: store}
	ctx := context.Background()
	key := lease.Key{Zone: "z", User: "alice"}

	first, err := z.sharedSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := lease.NewID(first, key)

	// Redis loses its data; another instance installs a new secret.
	client.FlushAll(ctx)
	other, _ := store.SharedSecret(ctx, lease.NewSecret())
	after := lease.NewID(other, key)

	if z.verify(key, after) {
		t.Fatal("an id of an unknown secret verified")
	}
	if changed, err := z.refreshSecret(ctx); err != nil || !changed {
		t.Fatalf("refresh: %v %v", changed, err)
	}
	if !z.verify(key, after) || !z.verify(key, before) {
		t.Fatal("after the refresh, ids of either secret must verify")
	}

	// Redis loses its data again, and nobody else is there: our secret goes
	// back in.
	client.FlushAll(ctx)
	z.secretRead = z.secretRead.Add(-2e9)
	if _, err := z.refreshSecret(ctx); err != nil {
		t.Fatal(err)
	}
	if kept, _ := client.Get(ctx, lease.DefaultKeyPrefix+"secret").Result(); kept != string(other) {
		t.Fatal("the remembered secret was not put back into Redis")
	}
}
