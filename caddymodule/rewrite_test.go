package caddymodule

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/streamlimit/caddy-streamlimit/internal/origintest"
	"github.com/streamlimit/caddy-streamlimit/internal/testmedia"
	"github.com/streamlimit/caddy-streamlimit/manifest"
)

// TestManifestsAreRewrittenForEveryLayout plays each packager layout of
// the test media with stock ffmpeg through a limiter with path_token and
// limit 1. The manifests it is served are rewritten, so every segment,
// wherever the manifest points (../, an absolute path, an absolute URL on
// the request's own host, a rendition's subdirectory, an EXT-X-MAP, a DASH
// template), carries the stream: the whole title is served as one stream
// (a second one would be refused at limit 1), and the origin never sees a
// token.
func TestManifestsAreRewrittenForEveryLayout(t *testing.T) {
	needFFmpeg(t)
	dir := testmedia.Dir(t)
	origin := origintest.StartWith(t, testmedia.Origin(dir))
	p := startCaddy(t, `
	route /* {
		stream_limit {
			mode session
			path_token
			limit 1
			list_path /streams
		}
		reverse_proxy `+origin.Addr+`
	}`)
	for _, layout := range testmedia.Layouts {
		t.Run(layout, func(t *testing.T) {
			user := "viewer-" + layout
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			before := len(origin.Paths())
			// -map 0: every rendition, so that every playlist is read.
			out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
				"-headers", "X-User-Id: "+user+"\r\n", "-i", p.url(testmedia.Entry[layout]),
				"-map", "0", "-c", "copy", "-f", "null", "-").CombinedOutput()
			if err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, out)
			}
			if n := admittedFor(p, user); n != 1 {
				t.Fatalf("the playback held %d streams, want 1", n)
			}
			served := map[string]bool{}
			for _, path := range origin.Paths() {
				if strings.Contains(path, PathTokenPrefix) {
					t.Fatalf("the origin saw a token: %s", path)
				}
				served[path] = true
			}
			// Every media file of the layout was served (ffmpeg reads all
			// renditions it maps).
			files, _ := filepath.Glob(filepath.Join(dir, layout, "**", "*"))
			more, _ := filepath.Glob(filepath.Join(dir, layout, "*"))
			missing := 0
			for _, f := range append(files, more...) {
				if st, err := os.Stat(f); err != nil || st.IsDir() {
					continue
				}
				rel := "/" + filepath.ToSlash(strings.TrimPrefix(f, dir+string(filepath.Separator)))
				if (strings.HasSuffix(rel, ".ts") || strings.HasSuffix(rel, ".m4s")) && !served[rel] {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%d segments of %s never reached the origin (%d requests served)", missing, layout, len(origin.Paths())-before)
			}
		})
	}
}

// admittedFor is how many streams the user holds now or held within the
// lease: the list of its live streams.
func admittedFor(p *proxy, user string) int {
	return len(p.listed("/streams", user))
}

// TestManifestsRewrittenBehindPrefixes: the rewritten URIs are relative to
// the manifest the client asked for, so they stay right when Caddy strips
// or rewrites a prefix before the limiter sees the request.
func TestManifestsRewrittenBehindPrefixes(t *testing.T) {
	needFFmpeg(t)
	origin := origintest.StartWith(t, testmedia.Origin(testmedia.Dir(t)))
	p := startCaddy(t, `
	handle_path /video/* {
		stream_limit {
			mode session
			path_token
			limit 1
		}
		reverse_proxy `+origin.Addr+`
	}`)
	for _, layout := range []string{"updir", "abspath", "sameurl", "renditions"} {
		t.Run(layout, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
				"-headers", "X-User-Id: prefixed-"+layout+"\r\n", "-i", p.url("/video"+testmedia.Entry[layout]),
				"-map", "0", "-c", "copy", "-f", "null", "-").CombinedOutput()
			if err != nil {
				t.Fatalf("ffmpeg behind handle_path: %v\n%s", err, out)
			}
		})
	}
}

// TestManifestResponsesAreRewrittenWhole: whatever the origin does with
// the manifest's encoding (none, gzip, br, zstd, chunked), validators and
// ranges, the client gets the whole rewritten manifest, with a length that
// matches, and nothing a shared cache or a conditional request could hand
// to another stream. URLs on the hosts rewrite_hosts lists are rewritten
// like the request's own; others (an ad server) are left alone.
func TestManifestResponsesAreRewrittenWhole(t *testing.T) {
	const playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/segments/a000.ts\n" +
		"#EXTINF:2.0,\nhttp://origin.internal:8080/segments/a001.ts\n#EXTINF:2.0,\nhttps://ads.example.com/ad.ts\n#EXT-X-ENDLIST\n"
	origin := origintest.StartWith(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// (Accept-Encoding: gzip may come from the proxy's own transport,
		// which then decodes the answer itself.)
		if r.Header.Get("Range") != "" || r.Header.Get("If-None-Match") != "" {
			t.Errorf("the origin was asked for part or a validation of a manifest: %v", r.Header)
		}
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Last-Modified", "Mon, 30 Nov 2026 10:00:00 GMT")
		w.Header().Set("Cache-Control", "public, max-age=60")
		// Compressed although not asked to, as some origins do.
		var zw io.WriteCloser
		switch enc := path.Base(path.Dir(r.URL.Path)); enc {
		case "gzip":
			zw = gzip.NewWriter(w)
		case "br":
			zw = brotli.NewWriter(w)
		case "zstd":
			zw, _ = zstd.NewWriter(w)
		case "chunked":
			// No length: Go's server sends it chunked.
			w.Write([]byte(playlist[:10]))
			http.NewResponseController(w).Flush()
			w.Write([]byte(playlist[10:]))
			return
		default:
			w.Write([]byte(playlist))
			return
		}
		w.Header().Set("Content-Encoding", path.Base(path.Dir(r.URL.Path)))
		zw.Write([]byte(playlist))
		zw.Close()
	}))
	p := startCaddy(t, `
	route /* {
		stream_limit {
			mode session
			path_token
			rewrite_hosts origin.internal
		}
		reverse_proxy `+origin.Addr+`
	}`)
	for _, name := range []string{"plain", "gzip", "br", "zstd", "chunked"} {
		t.Run(name, func(t *testing.T) {
			// The start is served the rewritten playlist at once (a VOD
			// playlist); the same client asks again, as a player that
			// probes first does, with a range and a validator.
			started := p.startFrom("/m/"+name+"/index.m3u8", "wren-"+name, "")
			landed, id := started.url, started.id
			req, _ := http.NewRequest(http.MethodGet, p.url(landed), nil)
			req.Header.Set("X-User-Id", "wren-"+name)
			req.Header.Set("Range", "bytes=0-10")
			req.Header.Set("If-None-Match", `"v1"`)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// The token is the stream's, made for the segment's directory,
			// and counts the segment's 2 s.
			token := regexp.MustCompile(regexp.QuoteMeta(PathTokenPrefix+id) + `\.d[\w-]{12}\.2000/`)
			got := token.ReplaceAllString(string(body), "TOKEN/")
			want := strings.Replace(playlist, "/segments/a000.ts", "../../segments/TOKEN/a000.ts", 1)
			want = strings.Replace(want, "http://origin.internal:8080/segments/a001.ts", "../../segments/TOKEN/a001.ts", 1)
			if resp.StatusCode != http.StatusOK || got != want {
				t.Fatalf("%s\n%q\nwant\n%q", resp.Status, got, want)
			}
			if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
				t.Fatalf("Content-Length %q for %d bytes", cl, len(body))
			}
			for _, h := range []string{"ETag", "Last-Modified", "Content-Encoding"} {
				if v := resp.Header.Get(h); v != "" {
					t.Fatalf("the rewritten manifest carries the origin's %s: %q", h, v)
				}
			}
			if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "private") {
				t.Fatalf("Cache-Control %q: a shared cache could hand this stream's manifest to another", cc)
			}
		})
	}
}

// TestPlainRelativeURIsTakeTheShortWay: the tokenized form of a plain
// relative URI, joined from the cached prefix of its directory, is the
// one the full resolution gives, in a manifest reached with a query token
// and in one reached below a path token.
func TestPlainRelativeURIsTakeTheShortWay(t *testing.T) {
	uris := []string{"init.mp4", "seg00.ts", "seg01.ts", "v0/seg00.ts", "v0/seg01.ts", "a/b/c.m4s", "a/b/d.m4s", "x:y.ts",
		"../up.ts", "./here.ts", "/abs.ts", "sub/", "q.ts?x=1", "e%20f.ts", "$Number$.m4s", "~sl-x/seg.ts", "a//b.ts"}
	for _, dir := range []string{"/t/hls/", "/t/hls/~sl-00000000-0000-8000-8000-000000000000.dAAAAAAAAAAAA/"} {
		fast := &tokenizer{base: url.URL{Scheme: "http", Host: "h", Path: "/t/hls/index.m3u8"}, dir: dir, id: "00000000-0000-8000-8000-000000000000", host: "h", secret: []byte("0123456789abcdef")}
		slow := *fast
		for _, uri := range uris {
			for _, d := range []time.Duration{0, 2 * time.Second, 1500 * time.Millisecond} {
				ref := manifest.Ref{Role: manifest.RoleSegment, URI: uri, Duration: d}
				got, gotOK := fast.ref(ref)
				want, wantOK := slow.slowRef(ref)
				if got != want || gotOK != wantOK {
					t.Errorf("%s in %s (%v): %q %v, want %q %v", uri, dir, d, got, gotOK, want, wantOK)
				}
			}
		}
	}
}
