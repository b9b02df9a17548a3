package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The fuzzers hold Rewrite to its contract on any input: it never panics;
// keeping every URI gives back the very bytes; replacing every URI gives a
// manifest that reads back with the replacements in the same places. The
// seeds are the fixtures, so `go test` runs them every time.

func FuzzRewriteHLS(f *testing.F)  { fuzzRewrite(f, HLS, "testdata/*.m3u8") }
func FuzzRewriteDASH(f *testing.F) { fuzzRewrite(f, DASH, "testdata/*.mpd") }

func fuzzRewrite(f *testing.F, kind Kind, glob string) {
	seeds, err := filepath.Glob(glob)
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds for %s: %v", glob, err)
	}
	for _, path := range seeds {
		body, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = Summarize(kind, body)
		refs, err := Refs(kind, body)
		if err != nil {
			return
		}
		for _, r := range refs {
			_, _ = r.Timeline.ByNumber(1), r.Timeline.ByTime(0)
		}
		kept, err := Rewrite(kind, body, func(Ref) (string, bool) { return "", false })
		if err != nil || !bytes.Equal(kept, body) {
			t.Fatalf("keeping every URI changed the manifest (err %v)", err)
		}
		n := 0
		out, err := Rewrite(kind, body, func(Ref) (string, bool) {
			n++
			return "r" + strconv.Itoa(n-1) + "~", true
		})
		if err != nil {
			t.Fatalf("replacing every URI: %v", err)
		}
		again, err := Refs(kind, out)
		if err != nil {
			t.Fatalf("the rewritten manifest does not read back: %v\n%q", err, out)
		}
		if len(again) != len(refs) {
			t.Fatalf("%d refs before, %d after:\n%q\n%q", len(refs), len(again), body, out)
		}
		for i, r := range again {
			if want := "r" + strconv.Itoa(i) + "~"; r.URI != want || r.Role != refs[i].Role || r.Tag != refs[i].Tag {
				t.Fatalf("ref %d reads back as %v %q (%s), want %v %q (%s)", i, r.Role, r.URI, r.Tag, refs[i].Role, want, refs[i].Tag)
			}
		}
	})
}
