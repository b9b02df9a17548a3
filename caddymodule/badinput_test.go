package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
)

// TestBadInputTable sends every kind of bad, odd or hostile request we know
// of through a real Caddy: each gets the contract's answer, none reaches the
// origin unless it should, and none changes another user's count.
func TestBadInputTable(t *testing.T) {
	p := startCaddy(t, `
	route /v/* {
		stream_limit {
			mode session
			path_token
			list_path /v/streams
		}
		reverse_proxy {upstream}
	}`)
	countHits := func() int { return p.origin.Hits("") }

	// The victim: alice holds one stream.
	landed := p.tokenized("/v/hls/index.m3u8", "alice")
	aliceID := streamIDOf(landed)
	// The caller's own stream, closed, then used again.
	closedURL := p.tokenized("/v/hls/index.m3u8", "mallory")
	p.do(http.MethodDelete, "/v/x", "mallory", StreamIDHeader, streamIDOf(closedURL))
	// The caller's own stream, kicked by an operator.
	kickedURL := p.tokenized("/v/hls/index.m3u8", "kicked")
	p.adminDo(http.MethodDelete, "/stream_limit/zones/default/users/kicked/streams/"+streamIDOf(kickedURL), "")

	forgedV8 := "6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11"
	cases := []struct {
		name    string
		method  string
		path    string
		user    string // "" sends no user header; "-" sends an empty one
		hdr     []string
		status  int
		error   string // "" when the answer is not a refusal
		proxied bool   // a GET start of a manifest fetches it (served at once if it is VOD, else redirected)
	}{
		{"no user header", "GET", "/v/hls/index.m3u8", "", nil, 401, "missing_user", false},
		{"empty user header", "GET", "/v/hls/index.m3u8", "-", nil, 401, "missing_user", false},
		{"user of 513 bytes", "GET", "/v/hls/index.m3u8", strings.Repeat("u", 513), nil, 400, "bad_user", false},
		{"user of 512 bytes", "GET", "/v/hls/index.m3u8", strings.Repeat("u", 512), nil, 307, "", true},
		{"user with high bytes", "GET", "/v/hls/index.m3u8", "\xff\xfe", nil, 307, "", true},
		{"user with braces and colons", "GET", "/v/hls/index.m3u8", "{a}: b", nil, 307, "", true},
		{"malformed Stream-Id", "GET", "/v/hls/seg.ts", "m1", []string{StreamIDHeader, "zzz"}, 400, "bad_stream_id", false},
		{"truncated Stream-Id", "GET", "/v/hls/seg.ts", "m2", []string{StreamIDHeader, aliceID[:35]}, 400, "bad_stream_id", false},
		{"Stream-Id in braces", "GET", "/v/hls/seg.ts", "m3", []string{StreamIDHeader, "{" + aliceID[:34] + "}"}, 400, "bad_stream_id", false},
		{"Stream-Id of 36 non-hex", "GET", "/v/hls/seg.ts", "m4", []string{StreamIDHeader, strings.Repeat("g", 8) + aliceID[8:]}, 400, "bad_stream_id", false},
		{"malformed stream_id query", "GET", "/v/hls/seg.ts?stream_id=nope", "m5", nil, 400, "bad_stream_id", false},
		{"forged random UUIDv4", "GET", "/v/hls/seg.ts", "m6", []string{StreamIDHeader, "6f1c1c1e-2b4a-4c55-9d7e-2f4a8d9b0c11"}, 404, "stream_not_found", false},
		{"forged UUIDv8", "GET", "/v/hls/seg.ts", "m7", []string{StreamIDHeader, forgedV8}, 404, "stream_not_found", false},
		{"another user's id, upper-cased", "GET", "/v/hls/seg.ts", "m8", []string{StreamIDHeader, strings.ToUpper(aliceID)}, 404, "stream_not_found", false},
		{"another user's id in the header", "GET", "/v/hls/seg.ts", "mallory", []string{StreamIDHeader, aliceID}, 404, "stream_not_found", false},
		{"another user's id in the query", "GET", "/v/hls/seg.ts?stream_id=" + aliceID, "mallory", nil, 404, "stream_not_found", false},
		{"another user's path token", "GET", landed, "mallory", nil, 404, "stream_not_found", false},
		{"malformed path token", "GET", "/v/hls/~sl-xyz/seg.ts", "m9", nil, 400, "bad_stream_id", false},
		{"empty path token", "GET", "/v/hls/~sl-/seg.ts", "m10", nil, 400, "bad_stream_id", false},
		{"two path tokens", "GET", "/v/~sl-" + aliceID + "/~sl-" + forgedV8 + "/seg.ts", "alice", nil, 400, "bad_stream_id", false},
		{"revoked own id", "GET", kickedURL, "kicked", nil, 409, "stream_revoked", false},
		{"replayed own closed id", "GET", closedURL, "mallory", nil, 409, "stream_revoked", false},
		{"own live id, bare, with path_token", "GET", "/v/hls/seg.ts", "alice", []string{StreamIDHeader, aliceID}, 404, "stream_not_found", false},
		{"own token on another title", "GET", strings.Replace(landed, "/hls/", "/other/", 1), "alice", nil, 404, "stream_not_found", false},
		{"own manifest token on a segment", "GET", strings.Replace(landed, "index.m3u8", "seg00.ts", 1), "alice", nil, 404, "stream_not_found", false},
		{"DELETE without an id", "DELETE", "/v/hls/index.m3u8", "m11", nil, 400, "missing_stream_id", false},
		{"DELETE with a malformed id", "DELETE", "/v/hls/index.m3u8", "m12", []string{StreamIDHeader, "x"}, 400, "bad_stream_id", false},
		{"DELETE with a forged id", "DELETE", "/v/hls/index.m3u8", "m13", []string{StreamIDHeader, forgedV8}, 404, "stream_not_found", false},
		{"DELETE of another user's stream", "DELETE", "/v/hls/index.m3u8", "mallory", []string{StreamIDHeader, aliceID}, 404, "stream_not_found", false},
		{"DELETE of another user's path token", "DELETE", landed, "mallory", nil, 404, "stream_not_found", false},
		{"odd method starts a stream", "PROPFIND", "/v/hls/index.m3u8", "m14", nil, 200, "", true},
		{"CORS preflight passes without a user", "OPTIONS", "/v/hls/index.m3u8", "", []string{"Origin", "https://player.example", "Access-Control-Request-Method", "GET"}, 200, "", true},
		{"OPTIONS that is no preflight needs a user", "OPTIONS", "/v/hls/index.m3u8", "", []string{"Origin", "https://player.example"}, 401, "missing_user", false},
		{"OPTIONS with a user is a start like any", "OPTIONS", "/v/hls/index.m3u8", "m15", nil, 200, "", true},
		{"HEAD probe takes no slot", "HEAD", "/v/hls/index.m3u8", "m16", nil, 307, "", false},
		{"huge query string", "GET", "/v/hls/index.m3u8?" + strings.Repeat("q=1&", 2000), "m17", nil, 307, "", true},
		{"long path", "GET", "/v/" + strings.Repeat("d/", 1000) + "index.m3u8", "m18", nil, 307, "", true},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := countHits()
			req, err := http.NewRequest(c.method, p.url(c.path), nil)
			if err != nil {
				t.Fatal(err)
			}
			switch c.user {
			case "":
			case "-":
				req.Header["X-User-Id"] = []string{""}
			default:
				req.Header.Set("X-User-Id", c.user)
			}
			for i := 0; i+1 < len(c.hdr); i += 2 {
				req.Header.Set(c.hdr[i], c.hdr[i+1])
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(resp)
			if resp.StatusCode != c.status {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.path[:min(len(c.path), 80)], resp.StatusCode, body, c.status)
			}
			if c.error != "" && decodeJSON(t, body)["error"] != c.error {
				t.Fatalf("body %s, want error %q", body, c.error)
			}
			if got := countHits() > before; got != c.proxied {
				t.Fatalf("reached the origin: %v, want %v", got, c.proxied)
			}
		})
	}
	if l := p.listed("/v/streams", "alice"); len(l) != 1 || l[0].(map[string]any)["id"] != aliceID {
		t.Fatalf("alice's streams after the table: %v", l)
	}
	for _, path := range p.origin.Paths() {
		if strings.Contains(path, "~sl") {
			t.Fatalf("the origin saw a token: %s", path)
		}
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestOriginNeverSeesAStreamID sends the stream id in every form a client
// can (header, query parameter, percent-encoded query name, cookie, path
// token) and checks what the origin received: no id in any form, and the
// rest of the query and the other cookies as they were sent.
func TestOriginNeverSeesAStreamID(t *testing.T) {
	var mu sync.Mutex
	var seen []string // one line per request: header, query, cookies
	upstream := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("path=%s header=%q query=%q cookie=%q", r.URL.Path, r.Header.Values(StreamIDHeader), r.URL.RawQuery, r.Header.Values("Cookie")))
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})).Addr
	p := startCaddy(t, `
	route /s/* {
		stream_limit {
			mode session
			path_token
		}
		reverse_proxy `+upstream+`
	}
	route /h/* {
		stream_limit {
			mode session
		}
		reverse_proxy `+upstream+`
	}
	route /c/* {
		stream_limit
		reverse_proxy `+upstream+`
	}`)
	landed := p.tokenized("/s/hls/index.m3u8", "viewer")
	id := p.start("/h/hls/index.m3u8", "viewer")
	mu.Lock()
	seen = nil
	mu.Unlock()

	cases := []struct {
		name, path string
		hdr        []string
		wantQuery  string
		wantCookie string
	}{
		{"header", "/h/hls/seg0.ts", []string{StreamIDHeader, id}, "", ""},
		{"query among others", "/h/hls/seg0.ts?a=1&stream_id=" + id + "&b=%20x+y", nil, "a=1&b=%20x+y", ""},
		{"percent-encoded query name", "/h/hls/seg0.ts?stream%5Fid=" + id + "&z", nil, "z", ""},
		{"query and header at once", "/h/hls/seg0.ts?stream_id=" + id, []string{StreamIDHeader, id}, "", ""},
		{"query token among others", strings.Replace(landed, "?", "?a=1&", 1) + "&b", nil, "a=1&b", ""},
		{"query token and another id in the header", landed, []string{StreamIDHeader, id}, "", ""},
		{"preflight with a header", "/s/hls/seg0.ts", []string{StreamIDHeader, id, "Origin", "https://x.example", "Access-Control-Request-Method", "GET"}, "", ""},
		{"connection mode with a header", "/c/file.mp4", []string{StreamIDHeader, id}, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			method := http.MethodGet
			if c.name == "preflight with a header" {
				method = http.MethodOptions
			}
			r, body := p.do(method, c.path, "viewer", c.hdr...)
			if r.StatusCode != http.StatusOK {
				t.Fatalf("%s: %s", r.Status, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 {
				t.Fatalf("the origin saw %d requests: %v", len(seen), seen)
			}
			if strings.Contains(seen[0], id) || strings.Contains(seen[0], PathTokenPrefix) || strings.Contains(seen[0], "stream") {
				t.Fatalf("the origin saw an id: %s", seen[0])
			}
			want := fmt.Sprintf("query=%q", c.wantQuery)
			if !strings.Contains(seen[0], want) {
				t.Fatalf("origin's view %s, want %s", seen[0], want)
			}
			if c.wantCookie != "" && !strings.Contains(seen[0], fmt.Sprintf("cookie=%q", []string{c.wantCookie})) {
				t.Fatalf("origin's view %s, want cookie %s", seen[0], c.wantCookie)
			}
		})
	}
}
