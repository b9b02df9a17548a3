// Package testmedia gives tests the media of the player matrix: one title
// laid out the ways packagers lay it out (make.sh says which), made once
// per version of make.sh and kept in the system's temporary directory, and
// an origin that serves it as a plain file server would.
package testmedia

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Layouts are the directories make.sh writes, each one way of laying out
// the same title; Entry gives the URL path a player starts from in each.
var Layouts = []string{"flat", "fmp4", "renditions", "updir", "abspath", "sameurl", "dash", "dashtl", "mp4"}

// Entry is the path, below an origin serving Dir, of a layout's manifest
// (or file).
var Entry = map[string]string{
	"flat":       "/flat/index.m3u8",
	"fmp4":       "/fmp4/index.m3u8",
	"renditions": "/renditions/master.m3u8",
	"updir":      "/updir/video/v0/index.m3u8",
	"abspath":    "/abspath/manifests/x/index.m3u8",
	"sameurl":    "/sameurl/manifests/x/index.m3u8",
	"dash":       "/dash/manifest.mpd",
	"dashtl":     "/dashtl/manifest.mpd",
	"mp4":        "/mp4/video.mp4",
}

var made struct {
	sync.Mutex
	dir string
}

// Dir returns the directory holding every layout, making it first when
// this version of make.sh has not made it yet. It needs ffmpeg; without
// it the test is skipped, or fails under CI=true.
func Dir(t testing.TB) string {
	t.Helper()
	made.Lock()
	defer made.Unlock()
	if made.dir != "" {
		return made.dir
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffmpeg is not installed; make test installs it")
		}
		t.Skip("ffmpeg is not installed (make test installs it)")
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "make.sh")
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	dir := filepath.Join(os.TempDir(), "streamlimit-testmedia-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "mp4", "video.mp4")); err != nil {
		cmd := exec.Command("bash", script, dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("making the test media: %v\n%s", err, out)
		}
	}
	made.dir = dir
	return dir
}

// Origin serves dir as a file server does, except that in the sameurl
// layout's playlists it writes the host the request was sent to, as a
// packager that emits absolute URLs does.
func Origin(dir string) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/sameurl/") || !strings.HasSuffix(r.URL.Path, ".m3u8") {
			files.ServeHTTP(w, r)
			return
		}
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(r.URL.Path, "/"))))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		fmt.Fprint(w, strings.ReplaceAll(string(b), "__HOST__", r.Host))
	})
}
