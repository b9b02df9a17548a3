package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// FuzzTakeStreamID: whatever path, header and query a request carries,
// taking its stream id never panics, yields a canonical id (with a token
// whose path parts are the request's) or an error, and never leaves a
// token in what is passed on.
func FuzzTakeStreamID(f *testing.F) {
	id := "6f1c1c1e-2b4a-8c55-9d7e-2f4a8d9b0c11"
	token := id + ".dAAAAAAAAAAAA.6000"
	for _, seed := range [][3]string{
		{"/hls/~sl-" + id + "/seg00.ts", "", ""},
		{"/hls/~sl-" + token + "/seg00.ts", "", ""},
		{"/hls/~sl-" + id + ".fAAAAAAAAAAAA.a/x/y.m3u8", "", ""},
		{"/hls/~sl-" + id + "/~sl-" + id + "/x", "", ""},
		{"/~sl-/", "", ""},
		{"/a/~sl-zz", id, ""},
		{"/a/seg.ts", "", "stream_id=" + id},
		{"/a/index.m3u8", "", "x=1&stream_id=" + token},
		{"/a/%7Esl-" + id + "/b", "", ""},
		{"/~sl-" + strings.ToUpper(id), "", ""},
		{"/a/seg.ts", "", "a=1&stream%5Fid=" + id + "&stream_id=" + id + "&b"},
		{"/a/seg.ts", "", "stream_id=%zz&x=%"},
		{"/a/~sl-" + id + ".p" + strings.Repeat("_", 12) + ".99999999999/b", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, path, header, query string) {
		u, err := url.Parse("http://h" + "/" + strings.TrimPrefix(path, "/"))
		if err != nil {
			return
		}
		u.RawQuery = query
		r := &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}}
		if header != "" {
			r.Header.Set(StreamIDHeader, header)
		}
		got, err := takeStreamID(r, true)
		if err != nil {
			return
		}
		if c, ok := lease.CanonicalID(got.id); got.id != "" && (!ok || c != got.id) {
			t.Fatalf("id %q is not canonical", got.id)
		}
		if tok := got.token; tok != nil && (tok.id != got.id || tok.prefix+tok.rest != r.URL.Path && tok.segment == "") {
			t.Fatalf("token %+v does not describe the request for %q", *tok, r.URL.Path)
		}
		if strings.Contains(r.URL.Path, "/"+PathTokenPrefix) {
			t.Fatalf("a token is left in the path passed on: %q", r.URL.Path)
		}
		// No other form of an id is passed on either.
		if r.Header.Get(StreamIDHeader) != "" {
			t.Fatalf("the %s header is passed on", StreamIDHeader)
		}
		if q, err := url.ParseQuery(r.URL.RawQuery); err == nil && q.Has(StreamIDQuery) {
			t.Fatalf("the %s parameter is passed on: %q", StreamIDQuery, r.URL.RawQuery)
		}
	})
}

// FuzzCaddyfile: no stream_limit block makes the parser panic. (The
// corpus in testdata/fuzz keeps the inputs that once broke the harness.)
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"limit 3\nmode session\nlease 30s",
		"store redis {\naddress a:1 b:2\ntls {\nca x\n}\n}",
		"list_path \"\"",
		"key\nlimit",
		"store memory {\n}",
		"dry_run\npath_token\nlog_user\nsecret {env.X}",
		"store redis a:1 {\ntimeout -1s\ndb x\n}",
		"}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		// Caddy's lexer refuses some inputs before any directive sees them
		// (its test dispenser would exit the process on those).
		tokens, err := caddyfile.Tokenize([]byte("stream_limit {\n"+body+"\n}"), "Caddyfile")
		if err != nil {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
