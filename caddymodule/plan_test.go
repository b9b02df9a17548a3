package caddymodule

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamlimit/caddy-streamlimit/manifest"
)

// TestPlansRewriteAsTheFullRewriteDoes: a playlist rewritten by its plan,
// made by one stream and applied for another, is byte for byte what the
// full rewrite gives that other stream, for the packagers' playlists of
// the manifest package, a live window and a playlist of many
// directories, as a main track and as an auxiliary one, below a path
// token and not.
func TestPlansRewriteAsTheFullRewriteDoes(t *testing.T) {
	playlists := map[string][]byte{}
	files, _ := filepath.Glob("../manifest/testdata/*.m3u8")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		playlists[filepath.Base(f)] = b
	}
	var live, dirs strings.Builder
	live.WriteString("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\"\n")
	dirs.WriteString("#EXTM3U\n#EXT-X-TARGETDURATION:6\n")
	for i := range 40 {
		fmt.Fprintf(&live, "#EXTINF:2.000,\nseg%03d.m4s\n", i)
		fmt.Fprintf(&dirs, "#EXTINF:%d.5,\nd%d/e/s%d.ts\n", 1+i%5, i%40, i)
	}
	playlists["live"], playlists["dirs"] = []byte(live.String()), []byte(dirs.String())

	secret := []byte("0123456789abcdef")
	tokenizerFor := func(id, dir string, aux bool) *tokenizer {
		ls := &localStream{}
		return &tokenizer{base: url.URL{Scheme: "http", Host: "h", Path: "/t/hls/index.m3u8"}, dir: dir, id: id, host: "h",
			secret: secret, aux: aux, stream: ls}
	}
	planned := 0
	for name, body := range playlists {
		for _, dir := range []string{"/t/hls/", "/t/hls/~sl-00000000-0000-8000-8000-000000000000.dAAAAAAAAAAAA/"} {
			for _, aux := range []bool{false, true} {
				// One stream makes the plan, another applies it.
				maker := tokenizerFor("00000000-0000-8000-8000-000000000001", dir, aux)
				if _, err := rewriteFor(nil, manifest.HLS, body, maker); err != nil {
					continue // not a playlist the rewriter reads: nothing to plan
				}
				id := "00000000-0000-8000-8000-000000000002"
				want, err := manifest.AppendEdits(nil, manifest.HLS, body, tokenizerFor(id, dir, aux).edit)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if plans.find(body, aux, false) != nil {
					planned++
				}
				got, err := rewriteFor(make([]byte, 3), manifest.HLS, body, tokenizerFor(id, dir, aux))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s in %s (aux %v): by plan\n%s\nwant\n%s\n(%v)", name, dir, aux, got, want, err)
				}
			}
		}
	}
	if planned == 0 {
		t.Fatal("no playlist was planned")
	}
}

// TestPlansAreBounded: however many playlists are read, the plans kept
// stay within their count and size.
func TestPlansAreBounded(t *testing.T) {
	tz := &tokenizer{base: url.URL{Scheme: "http", Host: "h", Path: "/t/index.m3u8"}, dir: "/t/", id: "00000000-0000-8000-8000-000000000001",
		host: "h", secret: []byte("0123456789abcdef")}
	for i := range 3 * maxPlans {
		body := fmt.Appendf(nil, "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:%d\n#EXTINF:2,\n%s\n", i, strings.Repeat("s", 1+i%3000)+".ts")
		if _, err := rewriteFor(nil, manifest.HLS, body, tz); err != nil {
			t.Fatal(err)
		}
	}
	plans.mu.Lock()
	n, size := len(plans.byHash), plans.bytes
	plans.mu.Unlock()
	if n > maxPlans || size > maxPlanBytes {
		t.Fatalf("%d plans of %d bytes kept; the bounds are %d and %d", n, size, maxPlans, maxPlanBytes)
	}
}

// BenchmarkRewritePlaylist measures rewriting a media playlist of 1,000
// segments (2 s each) for a stream whose prefixes are known: in full, as
// the first reader of a playlist does (and every reader of one without a
// plan), and by the playlist's plan, as its other readers do.
func BenchmarkRewritePlaylist(b *testing.B) {
	var body strings.Builder
	body.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n")
	for i := range 1000 {
		fmt.Fprintf(&body, "#EXTINF:2.000000,\nseg%05d.ts\n", i)
	}
	playlist := []byte(body.String())
	tz := &tokenizer{base: url.URL{Scheme: "http", Host: "h", Path: "/live/index.m3u8"}, dir: "/live/", id: "00000000-0000-8000-8000-000000000001",
		host: "h", secret: []byte("0123456789abcdef"), stream: &localStream{}}
	out := make([]byte, 0, 4*len(playlist))
	b.Run("segments=1000/full", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(playlist)))
		for range b.N {
			var err error
			if out, err = manifest.AppendEdits(out, manifest.HLS, playlist, tz.edit); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("segments=1000/by_plan", func(b *testing.B) {
		if _, err := rewriteFor(out, manifest.HLS, playlist, tz); err != nil || plans.find(playlist, false, false) == nil {
			b.Fatalf("no plan made (%v)", err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(playlist)))
		for range b.N {
			var err error
			if out, err = rewriteFor(out, manifest.HLS, playlist, tz); err != nil {
				b.Fatal(err)
			}
		}
	})
}
