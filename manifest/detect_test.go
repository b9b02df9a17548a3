package manifest

import "testing"

func TestDetect(t *testing.T) {
	for _, c := range []struct {
		contentType, path string
		want              Kind
	}{
		{"application/vnd.apple.mpegurl", "/v/index", HLS},
		{"Application/X-MpegURL; charset=utf-8", "/v/index", HLS},
		{"audio/mpegurl", "", HLS},
		{"audio/x-mpegurl", "", HLS},
		{"application/dash+xml", "/v/manifest", DASH},
		{"application/dash+xml;profiles=\"urn:mpeg:dash:profile:isoff-live:2011\"", "", DASH},
		// Types that say nothing definite defer to the extension.
		{"", "/v/index.m3u8", HLS},
		{"application/octet-stream", "/v/INDEX.M3U8?token=1", HLS},
		{"binary/octet-stream", "/v/manifest.mpd", DASH},
		{"text/plain", "/v/index.m3u8", HLS},
		{"application/xml", "/v/manifest.mpd#t=10", DASH},
		{"text/xml; charset=utf-8", "/v/manifest.mpd", DASH},
		{"", "/v/seg0.ts", None},
		{"", "/v/index.m3u8.bak", None},
		// A definite other type wins: an error page behind a .m3u8 path.
		{"text/html; charset=utf-8", "/v/index.m3u8", None},
		{"video/mp2t", "/v/index.m3u8", None},
		{"video/mp4", "/v/manifest.mpd", None},
		// The query is not the path.
		{"", "/v/seg.ts?next=index.m3u8", None},
	} {
		if got := Detect(c.contentType, c.path); got != c.want {
			t.Errorf("Detect(%q, %q) = %v, want %v", c.contentType, c.path, got, c.want)
		}
	}
}

func TestSniff(t *testing.T) {
	for _, c := range []struct {
		body string
		want Kind
	}{
		{"#EXTM3U\n#EXT-X-VERSION:3\n", HLS},
		{"\xef\xbb\xbf#EXTM3U\r\n", HLS},
		{" #EXTM3U\n", None}, // the tag must come first
		{`<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011">`, DASH},
		{`<mpd:MPD xmlns:mpd="urn:mpeg:dash:schema:mpd:2011">`, DASH},
		{"<html><body>Not found</body></html>", None},
		{"", None},
	} {
		if got := Sniff([]byte(c.body)); got != c.want {
			t.Errorf("Sniff(%q) = %v, want %v", c.body, got, c.want)
		}
	}
}
