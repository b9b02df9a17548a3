package manifest

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// The caller's use, end to end: resolve every URI against the manifest's
// URL, and put the token only on those the origin serves.
func ExampleRewrite() {
	manifestURL, _ := url.Parse("https://video.example.com/hls/title1/index.m3u8")
	body := []byte("#EXTM3U\n" +
		"#EXT-X-KEY:METHOD=AES-128,URI=\"https://keys.example.net/k\"\n" +
		"#EXTINF:6.0,\n../segments/a000.ts\n" +
		"#EXTINF:6.0,\nhttps://video.example.com/hls/title1/a001.ts\n")
	out, err := Rewrite(HLS, body, func(r Ref) (string, bool) {
		u, err := r.Resolve(manifestURL)
		if err != nil || !SameHost(u, []string{manifestURL.Host}) {
			return "", false // foreign (a key server, an ad server): left alone
		}
		q := u.Query()
		q.Set("st", "TOKEN")
		u.RawQuery = q.Encode()
		return u.RequestURI(), true
	})
	fmt.Print(string(out), err)
	// Output:
	// #EXTM3U
	// #EXT-X-KEY:METHOD=AES-128,URI="https://keys.example.net/k"
	// #EXTINF:6.0,
	// /hls/segments/a000.ts?st=TOKEN
	// #EXTINF:6.0,
	// /hls/title1/a001.ts?st=TOKEN
	// <nil>
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		fixture string
		kind    Kind
		want    Summary
	}{
		{"ffmpeg_flat.m3u8", HLS, Summary{TargetDuration: 4 * time.Second, Segments: 3, Total: 10500 * time.Millisecond, Ended: true}},
		{"ffmpeg_fmp4.m3u8", HLS, Summary{TargetDuration: 6 * time.Second, Segments: 3, Total: 15015 * time.Millisecond, Ended: true}},
		{"llhls.m3u8", HLS, Summary{TargetDuration: 4 * time.Second, Segments: 3, Total: 9000180 * time.Microsecond}},
		{"apple_master.m3u8", HLS, Summary{Master: true}},
		{"nginx_vod_index.m3u8", HLS, Summary{TargetDuration: 10 * time.Second, Segments: 3, Total: 24160 * time.Millisecond, Ended: true}},
		{"shaka_timeline.mpd", DASH, Summary{Total: 12012 * time.Millisecond, Ended: true, Video: true}},
		{"bento4_number.mpd", DASH, Summary{TargetDuration: 4 * time.Second, Total: time.Minute, Ended: true, Video: true}},
		{"live_location.mpd", DASH, Summary{TargetDuration: 2 * time.Second, Video: true}},
	} {
		body, err := os.ReadFile("testdata/" + c.fixture)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Summarize(c.kind, body)
		if err != nil || got != c.want {
			t.Errorf("%s: Summarize = %+v, %v; want %+v", c.fixture, got, err, c.want)
		}
	}
}

func TestISODuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"PT1H2M3.5S": time.Hour + 2*time.Minute + 3500*time.Millisecond,
		"P1DT2H":     26 * time.Hour,
		"PT0S":       0,
		"P1M":        0, // months have no fixed length
		"PT":         0,
		"1H":         0,
		"PTS":        0,
	} {
		if got := isoDuration(in); got != want {
			t.Errorf("isoDuration(%q) = %v, want %v", in, got, want)
		}
	}
}

// What the callback is told, on the cases the fixtures do not show.
func TestRefsEdgeCases(t *testing.T) {
	for _, c := range []struct {
		name string
		kind Kind
		body string
		want string // formatRefs
	}{
		{"a master's variant needs no EXTINF", HLS, "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\n\n# comment between\nhigh.m3u8\n",
			"playlist         low.m3u8 (EXT-X-STREAM-INF)\nplaylist         high.m3u8 (EXT-X-STREAM-INF)\n"},
		{"a URI line without EXTINF", HLS, "#EXTM3U\nseg.ts\n", "segment          seg.ts (EXTINF)\n"},
		{"an unquoted, empty or unterminated URI is no URI", HLS, "#EXTM3U\n#EXT-X-MAP:URI=init.mp4\n#EXT-X-KEY:METHOD=AES-128,URI=\"\"\n#EXT-X-MAP:URI=\"init.mp4\n", ""},
		{"a title that looks like an attribute", HLS, "#EXTM3U\n#EXTINF:4,URI=\"x.ts\"\nseg.ts\n", "segment          seg.ts dur=4s (EXTINF)\n"},
		{"unknown EXT-X tags with URI are reported; other tags are not", HLS, "#EXTM3U\n#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=1,URI=\"thumbs.m3u8\"\n#EXT-X-NEW:URI=\"n.json\"\n#EXT-OTHER:URI=\"o.json\"\n",
			"playlist         thumbs.m3u8 (EXT-X-IMAGE-STREAM-INF)\nother            n.json (EXT-X-NEW)\n"},
		{"a preload hint for a map", HLS, "#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init2.mp4\"\n", "preload-hint     init2.mp4 (EXT-X-PRELOAD-HINT)\n"},
		{"hostile durations are unknown", HLS, "#EXTM3U\n#EXTINF:-1,\na.ts\n#EXTINF:NaN,\nb.ts\n#EXTINF:1e300,\nc.ts\n",
			"segment          a.ts (EXTINF)\nsegment          b.ts (EXTINF)\nsegment          c.ts (EXTINF)\n"},
		{"namespaced MPD, remote period, CDATA and comments in text", DASH, `<?xml version="1.0"?>` +
			`<!DOCTYPE MPD [ <!ENTITY e "x"> ]>` +
			`<mpd:MPD xmlns:mpd="urn:mpeg:dash:schema:mpd:2011" xmlns:xlink="http://www.w3.org/1999/xlink">` +
			`<mpd:BaseURL><![CDATA[a/]]></mpd:BaseURL><mpd:BaseURL>b<!-- c -->/</mpd:BaseURL>` +
			`<mpd:Period xlink:href="https://ads.example.net/period.xml" xlink:actuate="onLoad"/>` +
			`<mpd:Period xlink:href="urn:mpeg:dash:resolve-to-zero:2013"/>` +
			`<mpd:Period><mpd:BaseURL> spaced/ </mpd:BaseURL></mpd:Period></mpd:MPD>`,
			"other            https://ads.example.net/period.xml (Period@xlink:href)\nbase-url         spaced/ (BaseURL)\n"},
		{"a template's timing comes from the enclosing template", DASH, `<MPD><Period><AdaptationSet>` +
			`<SegmentTemplate timescale="10" duration="25"><SegmentTimeline/></SegmentTemplate>` +
			`<Representation id="a"><SegmentTemplate media="$Time$.m4s"/></Representation></AdaptationSet></Period></MPD>`,
			"segment          $Time$.m4s dur=2.5s template (SegmentTemplate@media)\n"},
		{"a SegmentList longer than its timeline", DASH, `<MPD><Period><SegmentList timescale="1"><SegmentTimeline><S d="2"/></SegmentTimeline>` +
			`<SegmentURL media="1.m4s"/><SegmentURL media="2.m4s"/></SegmentList></Period></MPD>`,
			"segment          1.m4s dur=2s (SegmentURL@media)\nsegment          2.m4s (SegmentURL@media)\n"},
		{"numeric character references", DASH, `<MPD><Period><BaseURL>a&#x2F;b&#47;c&#0;&bogus;</BaseURL></Period></MPD>`,
			"base-url         a/b/c&#0;&bogus; (BaseURL)\n"},
	} {
		refs, err := Refs(c.kind, []byte(c.body))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := formatRefs(refs); got != c.want {
			t.Errorf("%s:\ngot:\n%swant:\n%s", c.name, got, c.want)
		}
	}
}

func TestRewriteErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		kind Kind
		body string
		repl string
		want error // nil: any error
	}{
		{"an HTML page said to be HLS", HLS, "<html>Not found</html>", "x", ErrNotManifest},
		{"an HTML page said to be DASH", DASH, "<html><body>Not found</body></html>", "x", ErrNotManifest},
		{"an empty body", DASH, "", "x", ErrNotManifest},
		{"no kind", None, "#EXTM3U\n", "x", nil},
		{"a line break in a URI line", HLS, "#EXTM3U\na.ts\n", "a.ts\n#EXT-X-ENDLIST", ErrReplacement},
		{"a URI line that would be a tag", HLS, "#EXTM3U\na.ts\n", "#a.ts", ErrReplacement},
		{"an empty URI line", HLS, "#EXTM3U\na.ts\n", "", ErrReplacement},
		{"a quote in an attribute", HLS, "#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\"\n", `i.mp4",BYTERANGE="1`, ErrReplacement},
		{"an unclosed element", DASH, "<MPD><Period>", "x", nil},
		{"a mismatched end tag", DASH, "<MPD><Period></MPD>", "x", nil},
		{"an unquoted attribute", DASH, "<MPD type=static></MPD>", "x", nil},
		{"an unterminated comment", DASH, "<MPD><!-- ", "x", nil},
		{"two roots", DASH, "<MPD></MPD><MPD></MPD>", "x", nil},
	} {
		out, err := Rewrite(c.kind, []byte(c.body), func(Ref) (string, bool) { return c.repl, true })
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: Rewrite = %q, %v; want error %v", c.name, out, err, c.want)
		}
	}
}

// In an MPD the callback works on the unescaped URI and its replacement is
// escaped as it is written; whitespace is written as character references,
// which read back as the same URI.
func TestRewriteDASHEscapes(t *testing.T) {
	body := `<MPD><BaseURL>https://a.example.com/?x=1&amp;y=2</BaseURL><Period><SegmentList><SegmentURL media='s&apos;1.m4s'/></SegmentList></Period></MPD>`
	var seen []string
	out, err := Rewrite(DASH, []byte(body), func(r Ref) (string, bool) {
		seen = append(seen, r.URI)
		return r.URI + `&t="<tok en>"'`, true
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://a.example.com/?x=1&y=2", "s'1.m4s"}; strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Errorf("fn saw %q, want %q", seen, want)
	}
	want := `<MPD><BaseURL>https://a.example.com/?x=1&amp;y=2&amp;t=&quot;&lt;tok&#x20;en&gt;&quot;&apos;</BaseURL><Period><SegmentList>` +
		`<SegmentURL media='s&apos;1.m4s&amp;t=&quot;&lt;tok&#x20;en&gt;&quot;&apos;'/></SegmentList></Period></MPD>`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	refs, err := Refs(DASH, out)
	if err != nil || len(refs) != 2 || refs[0].URI != seen[0]+`&t="<tok en>"'` {
		t.Errorf("the rewrite reads back as %+v, %v", refs, err)
	}
}

// BenchmarkRewriteHLS rewrites a 1,000-segment media playlist, putting a
// token on every URI, as the proxy would on each playlist it serves.
func BenchmarkRewriteHLS(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n")
	for i := range 1000 {
		fmt.Fprintf(&sb, "#EXTINF:6.006,\nsegments/title1_720p_%05d.m4s\n", i)
	}
	sb.WriteString("#EXT-X-ENDLIST\n")
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Rewrite(HLS, body, func(r Ref) (string, bool) { return r.URI + "?st=0123456789abcdef", true }); err != nil {
			b.Fatal(err)
		}
	}
}

// The issue's rule on the fixtures: relative, root-relative and absolute
// URIs on the origin's host carry the token; foreign hosts (key servers,
// ad servers, steering servers) and non-HTTP schemes are left alone.
func TestTokenOnOriginOnly(t *testing.T) {
	for _, c := range []struct {
		fixture, manifestURL string
		foreign              []string // the URIs left alone, in order
	}{
		{"nginx_vod_master.m3u8", "https://video.example.com/hls/title1.mp4/master.m3u8", nil},
		{"nginx_vod_index.m3u8", "https://video.example.com/hls/title1.mp4/index-v1-a1.m3u8", nil},
		{"relative_parent.m3u8", "https://video.example.com/a/b/c/index.m3u8", nil},
		{"absolute_path.m3u8", "https://video.example.com/a/index.m3u8", nil},
		{"encrypted.m3u8", "https://video.example.com/enc/index.m3u8", []string{"https://keys.example.net/v1/key?id=42&kid=7"}},
		{"daterange.m3u8", "https://video.example.com/main.m3u8", []string{"https://ads.example.net/break1/master.m3u8"}},
		{"apple_master.m3u8", "https://video.example.com/master.m3u8", []string{"skd://keys.example.net/title1"}},
		{"live_location.mpd", "https://live.example.com/channel1/manifest.mpd", []string{"https://steering.example.net/dash.dcsm"}},
		{"shaka_timeline.mpd", "https://video.example.com/vod/title1/manifest.mpd", nil},
		// Served from another host than its BaseURL names: all foreign but
		// what resolves through no BaseURL.
		{"escaped.mpd", "https://other.example.com/manifest.mpd", []string{
			"https://video.example.com/signed/?policy=p1&sig=Zm9v&exp=1764500000", "init.mp4?a=1&b=2", `seg-$Number$.m4s?a=1&b="x"`}},
	} {
		body, err := os.ReadFile("testdata/" + c.fixture)
		if err != nil {
			t.Fatal(err)
		}
		base := mustURL(t, c.manifestURL)
		var foreign []string
		out, err := Rewrite(Detect("", c.fixture), body, func(r Ref) (string, bool) {
			u, err := r.Resolve(base)
			if err != nil || !SameHost(u, []string{base.Host}) {
				foreign = append(foreign, r.URI)
				return "", false
			}
			return r.URI + marker, true
		})
		if err != nil {
			t.Fatalf("%s: %v", c.fixture, err)
		}
		if strings.Join(foreign, "\n") != strings.Join(c.foreign, "\n") {
			t.Errorf("%s: left alone %q, want %q", c.fixture, foreign, c.foreign)
		}
		refs, _ := Refs(Detect("", c.fixture), body)
		if n := strings.Count(string(out), marker); n != len(refs)-len(c.foreign) {
			t.Errorf("%s: %d URIs carry the token, want %d", c.fixture, n, len(refs)-len(c.foreign))
		}
	}
}

// TestParseSeconds: durations as packagers write them are read exactly,
// without a float; other forms as ParseFloat reads them; nonsense is 0.
func TestParseSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"2":            2 * time.Second,
		"6.006":        6006 * time.Millisecond,
		"4.000000":     4 * time.Second,
		" 10.5 ":       10500 * time.Millisecond,
		"0.0000000019": 1,
		"1e1":          10 * time.Second,
		"2.":           2 * time.Second,
		".5":           500 * time.Millisecond,
		"-3":           0,
		"":             0,
		"abc":          0,
		"0":            0,
		"NaN":          0,
		"999999999999": 0,
	} {
		if got := parseSeconds([]byte(in)); got != want {
			t.Errorf("parseSeconds(%q) = %v, want %v", in, got, want)
		}
	}
}
