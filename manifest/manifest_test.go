package manifest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures in testdata imitate what the packagers' documentation shows
// (testdata/README.md says which imitates which); their golden files hold
// the refs each yields and its rewrite with a marker appended to every URI.
// Run with -update to write the golden files, then read the diff.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const marker = "~TOKEN~"

func fixtures(t testing.TB) []string {
	var names []string
	for _, pattern := range []string{"testdata/*.m3u8", "testdata/*.mpd"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, m...)
	}
	if len(names) == 0 {
		t.Fatal("no fixtures")
	}
	return names
}

func formatRefs(refs []Ref) string {
	var sb strings.Builder
	for _, r := range refs {
		fmt.Fprintf(&sb, "%-16s %s", r.Role, r.URI)
		if r.Duration != 0 {
			fmt.Fprintf(&sb, " dur=%v", r.Duration)
		}
		if r.Template {
			sb.WriteString(" template")
		}
		if r.Timeline != nil {
			fmt.Fprintf(&sb, " timeline=%d", len(r.Timeline.runs))
		}
		if r.Track != "" {
			fmt.Fprintf(&sb, " track=%s", r.Track)
		}
		if r.Base != "" {
			fmt.Fprintf(&sb, " base=%s", r.Base)
		}
		fmt.Fprintf(&sb, " (%s)\n", r.Tag)
	}
	return sb.String()
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestFixtures(t *testing.T) {
	for _, path := range fixtures(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			kind := Detect("", name)
			if kind == None || Sniff(body) != kind {
				t.Fatalf("Detect says %v, Sniff says %v", kind, Sniff(body))
			}
			refs, err := Refs(kind, body)
			if err != nil {
				t.Fatal(err)
			}
			if len(refs) == 0 {
				t.Fatal("no refs")
			}
			golden(t, filepath.Join("testdata", "golden", name+".refs"), []byte(formatRefs(refs)))

			kept, err := Rewrite(kind, body, func(Ref) (string, bool) { return "", false })
			if err != nil || !bytes.Equal(kept, body) {
				t.Fatalf("keeping every URI changed the manifest (err %v)", err)
			}
			same, err := Rewrite(kind, body, func(r Ref) (string, bool) { return r.URI, true })
			if err != nil || !bytes.Equal(same, body) {
				t.Fatalf("writing every URI back as it was changed the manifest (err %v):\n%s", err, same)
			}

			out, err := Rewrite(kind, body, func(r Ref) (string, bool) { return r.URI + marker, true })
			if err != nil {
				t.Fatal(err)
			}
			// Only the URIs changed: take the markers out and the input is back.
			if n := bytes.Count(out, []byte(marker)); n != len(refs) {
				t.Errorf("%d markers written for %d refs", n, len(refs))
			}
			if !bytes.Equal(bytes.ReplaceAll(out, []byte(marker), nil), body) {
				t.Errorf("bytes other than the URIs changed:\n%s", out)
			}
			golden(t, filepath.Join("testdata", "golden", name+".rewritten"), out)
		})
	}
}
