package manifest

import (
	"net/url"
	"testing"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestResolve(t *testing.T) {
	manifest := mustURL(t, "https://video.example.com/vod/title1/hls/index.m3u8?token=abc")
	for _, c := range []struct{ ref, want string }{
		{"seg0.ts", "https://video.example.com/vod/title1/hls/seg0.ts"}, // no ?token: RFC 3986
		{"../segments/a000.ts", "https://video.example.com/vod/title1/segments/a000.ts"},
		{"../../../../a.ts", "https://video.example.com/a.ts"},
		{"/segments/a000.ts", "https://video.example.com/segments/a000.ts"},
		{"/segments/a001.ts?v=2", "https://video.example.com/segments/a001.ts?v=2"},
		{"https://ads.example.net/break1/master.m3u8", "https://ads.example.net/break1/master.m3u8"},
		{"//cdn.example.com/x.ts", "https://cdn.example.com/x.ts"},
		{"skd://keys.example.net/title1", "skd://keys.example.net/title1"},
	} {
		got, err := Resolve(manifest, c.ref)
		if err != nil || got.String() != c.want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", c.ref, got, err, c.want)
		}
	}
	if _, err := Resolve(manifest, "http://[::1"); err == nil {
		t.Error("an unparsable URI resolved")
	}
}

// A DASH URI resolves against the BaseURLs in scope, joined outside in,
// and then against the MPD's own URL.
func TestRefResolveDASH(t *testing.T) {
	mpd := mustURL(t, "https://video.example.com/dash/title1/manifest.mpd?token=abc")
	for _, c := range []struct {
		name, body, want string
	}{
		{"nested relative BaseURLs", `<MPD><BaseURL>v1/</BaseURL><Period><BaseURL>p0/</BaseURL><AdaptationSet><BaseURL>../video/</BaseURL>` +
			`<SegmentTemplate media="$Number$.m4s"/></AdaptationSet></Period></MPD>`,
			"https://video.example.com/dash/title1/v1/video/$Number$.m4s"},
		{"absolute then relative", `<MPD><BaseURL>https://cdn.example.com/a/</BaseURL><Period><BaseURL>b/</BaseURL>` +
			`<AdaptationSet><SegmentList><SegmentURL media="s1.m4s"/></SegmentList></AdaptationSet></Period></MPD>`,
			"https://cdn.example.com/a/b/s1.m4s"},
		{"root-relative BaseURL", `<MPD><BaseURL>https://cdn.example.com/a/</BaseURL><Period><BaseURL>/root/</BaseURL>` +
			`<AdaptationSet><SegmentTemplate media="s.m4s"/></AdaptationSet></Period></MPD>`,
			"https://cdn.example.com/root/s.m4s"},
		{"a BaseURL's query stays with it", `<MPD><BaseURL>v1/?sig=1</BaseURL><Period><BaseURL>p0/</BaseURL>` +
			`<AdaptationSet><SegmentTemplate media="s.m4s"/></AdaptationSet></Period></MPD>`,
			"https://video.example.com/dash/title1/v1/p0/s.m4s"},
		{"the first of several BaseURLs", `<MPD><Period><BaseURL>a/</BaseURL><BaseURL>https://mirror.example.com/b/</BaseURL>` +
			`<AdaptationSet><SegmentTemplate media="s.m4s"/></AdaptationSet></Period></MPD>`,
			"https://video.example.com/dash/title1/a/s.m4s"},
		{"no BaseURL", `<MPD><Period><AdaptationSet><SegmentTemplate media="../s.m4s"/></AdaptationSet></Period></MPD>`,
			"https://video.example.com/dash/s.m4s"},
	} {
		refs, err := Refs(DASH, []byte(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		last := refs[len(refs)-1]
		got, err := last.Resolve(mpd)
		if err != nil || got.String() != c.want {
			t.Errorf("%s: %q in %q resolves to %v, %v; want %s", c.name, last.URI, last.Base, got, err, c.want)
		}
	}
}

func TestSameHost(t *testing.T) {
	hosts := []string{"video.example.com", "origin.example.com:8443", "*.cdn.example.org", "[::1]"}
	for _, c := range []struct {
		url  string
		want bool
	}{
		{"https://video.example.com/a.ts", true},
		{"http://VIDEO.example.com:8080/a.ts", true}, // no port listed: any port
		{"https://origin.example.com:8443/a.ts", true},
		{"https://origin.example.com/a.ts", false}, // 443 is not 8443
		{"https://edge1.cdn.example.org/a.ts", true},
		{"https://cdn.example.org/a.ts", false},
		{"https://evilvideo.example.com/a.ts", false},
		{"https://video.example.com.evil.net/a.ts", false},
		{"http://[::1]:8080/a.ts", true},
		{"https://ads.example.net/a.m3u8", false},
		{"skd://video.example.com/key", false}, // not fetched over HTTP
		{"data:text/plain,video.example.com", false},
		{"/relative/a.ts", false},
	} {
		if got := SameHost(mustURL(t, c.url), hosts); got != c.want {
			t.Errorf("SameHost(%s) = %v, want %v", c.url, got, c.want)
		}
	}
	if !SameHost(mustURL(t, "https://origin.example.com/a.ts"), []string{"origin.example.com:443"}) {
		t.Error("a default port listed did not match a URL without one")
	}
}
