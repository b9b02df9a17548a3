package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const adminSite = `
	route /s/* {
		stream_limit {
			mode session
			zone tv
			limit {http.request.header.X-Plan-Streams}
			list_path /s/streams
		}
		reverse_proxy {upstream}
	}
	route /c/* {
		stream_limit {
			zone tv
			list_path /c/streams
		}
		reverse_proxy {upstream}
	}`

// admin sends a request to Caddy's admin endpoint.
func (p *proxy) adminDo(method, path, body string) (int, string) {
	p.t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.admin+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func userPath(user string) string { return "/stream_limit/zones/tv/users/" + url.PathEscape(user) }

func TestAdminAPI(t *testing.T) {
	p := startCaddy(t, adminSite)

	t.Run("list with odd user names", func(t *testing.T) {
		for _, user := range []string{"plain", "a/b", "100%", "with space", "ünï©ødé", "{x}:y"} {
			ids := []string{p.start("/s/a.m3u8", user), p.start("/s/a.m3u8", user)}
			code, body := p.adminDo(http.MethodGet, userPath(user), "")
			if code != http.StatusOK {
				t.Fatalf("GET %q: %d %s", user, code, body)
			}
			got := decodeJSON(t, body)
			streams := got["streams"].([]any)
			if got["limit"] != 3.0 || len(streams) != 2 || streams[0].(map[string]any)["id"] != ids[0] {
				t.Fatalf("GET %q: %s, want limit 3 and %v", user, body, ids)
			}
			for _, s := range streams {
				m := s.(map[string]any)
				started, _ := time.Parse(time.RFC3339Nano, m["started"].(string))
				expires, _ := time.Parse(time.RFC3339Nano, m["expires"].(string))
				if !expires.After(started) {
					t.Fatalf("stream %v: expires before it starts", m)
				}
			}
		}
	})

	t.Run("totals", func(t *testing.T) {
		code, body := p.adminDo(http.MethodGet, "/stream_limit/zones/tv", "")
		got := decodeJSON(t, body)
		if code != http.StatusOK || got["users"] != 6.0 || got["streams"] != 12.0 || got["admitted"].(float64) < 12 {
			t.Fatalf("totals: %d %s", code, body)
		}
	})

	t.Run("kick a session stream", func(t *testing.T) {
		id := p.start("/s/a.m3u8", "kicked")
		if code, body := p.adminDo(http.MethodDelete, userPath("kicked")+"/streams/"+id, ""); code != http.StatusNoContent {
			t.Fatalf("kick: %d %s", code, body)
		}
		resp, body := p.do(http.MethodGet, "/s/seg.ts", "kicked", StreamIDHeader, id)
		if resp.StatusCode != http.StatusConflict || decodeJSON(t, body)["error"] != "stream_revoked" {
			t.Fatalf("kicked stream's next request: %s %s", resp.Status, body)
		}
		if code, _ := p.adminDo(http.MethodDelete, userPath("kicked")+"/streams/"+id, ""); code != http.StatusNotFound {
			t.Fatalf("kicking it again: %d, want 404", code)
		}
	})

	t.Run("kick cuts a live connection", func(t *testing.T) {
		s := p.open("/c/slow/v.ts", "watcher")
		id := s.resp.Header.Get(StreamIDHeader)
		if code, body := p.adminDo(http.MethodDelete, userPath("watcher")+"/streams/"+id, ""); code != http.StatusNoContent {
			t.Fatalf("kick: %d %s", code, body)
		}
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Fatal("the kicked connection was not cut")
		}
	})

	t.Run("overrides win over the placeholder, which wins over the default", func(t *testing.T) {
		starts := func(user, plan string) (admitted int) {
			for range 6 {
				if r, _ := p.do(http.MethodGet, "/s/a.m3u8", user, "X-Plan-Streams", plan); r.StatusCode == http.StatusOK {
					admitted++
				}
			}
			return admitted
		}
		if n := starts("def", ""); n != 3 {
			t.Fatalf("no plan, no override: %d admitted, want the default 3", n)
		}
		if n := starts("plan", "5"); n != 5 {
			t.Fatalf("plan 5: %d admitted", n)
		}
		if code, body := p.adminDo(http.MethodPut, userPath("vip"), `{"limit":1}`); code != http.StatusMethodNotAllowed {
			t.Fatalf("PUT on the user itself: %d %s, want 405", code, body)
		}
		if code, body := p.adminDo(http.MethodPut, userPath("vip")+"/limit", `{"limit":1}`); code != http.StatusOK {
			t.Fatalf("PUT limit: %d %s", code, body)
		}
		if n := starts("vip", "5"); n != 1 {
			t.Fatalf("override 1 over plan 5: %d admitted", n)
		}
		if _, body := p.adminDo(http.MethodGet, userPath("vip"), ""); decodeJSON(t, body)["limit"] != 1.0 {
			t.Fatalf("GET after override: %s", body)
		}
		if code, _ := p.adminDo(http.MethodDelete, userPath("vip")+"/limit", ""); code != http.StatusNoContent {
			t.Fatalf("DELETE limit: %d", code)
		}
		if code, _ := p.adminDo(http.MethodDelete, userPath("vip")+"/limit", ""); code != http.StatusNotFound {
			t.Fatalf("DELETE limit again: %d, want 404", code)
		}
		if n := starts("vip", "5"); n != 4 {
			t.Fatalf("after removing the override, plan 5 with 1 held: %d more admitted, want 4", n)
		}
	})

	t.Run("errors are JSON with the right status", func(t *testing.T) {
		for _, c := range []struct {
			method, path, body string
			status             int
		}{
			{http.MethodGet, "/stream_limit/zones/nosuch", "", http.StatusNotFound},
			{http.MethodGet, "/stream_limit/zones/nosuch/users/x", "", http.StatusNotFound},
			{http.MethodGet, "/stream_limit/elsewhere", "", http.StatusNotFound},
			{http.MethodDelete, userPath("x") + "/streams/6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11", "", http.StatusNotFound},
			{http.MethodDelete, userPath("x") + "/streams/not-an-id", "", http.StatusBadRequest},
			{http.MethodPut, userPath("x") + "/limit", `{"limit":-1}`, http.StatusBadRequest},
			{http.MethodPut, userPath("x") + "/limit", `{"limit":"3"}`, http.StatusBadRequest},
			{http.MethodPut, userPath("x") + "/limit", `{"cap":3}`, http.StatusBadRequest},
			{http.MethodPut, userPath("x") + "/limit", `not json`, http.StatusBadRequest},
			{http.MethodPut, userPath("x") + "/limit", ``, http.StatusBadRequest},
			{http.MethodPost, userPath("x"), ``, http.StatusMethodNotAllowed},
			{http.MethodGet, "/stream_limit/zones/tv/users/" + strings.Repeat("u", 600), "", http.StatusBadRequest},
		} {
			code, body := p.adminDo(c.method, c.path, c.body)
			if code != c.status || !bytes.Contains([]byte(body), []byte(`"error"`)) {
				t.Errorf("%s %s %s: %d %s, want %d with a JSON error", c.method, c.path, c.body, code, body, c.status)
			}
		}
	})
}
