package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamlimit/caddy-streamlimit/internal/loopback"
)

// These tests build this command, as `make run` does, and drive the binary:
// what an operator types is what is tested.

var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamlimit-cmd-")
	if err != nil {
		panic(err)
	}
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caddy:", err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	os.Setenv("XDG_DATA_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestListModulesShowsStreamLimit(t *testing.T) {
	out, err := exec.Command(caddyBin, "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, mod := range []string{"http.handlers.stream_limit", "stream_limit.stores.memory", "http.handlers.reverse_proxy"} {
		if !strings.Contains(string(out), mod+"\n") {
			t.Errorf("list-modules does not show %s", mod)
		}
	}
}

// startDemo runs the committed demo Caddyfile, as the README does, on free
// ports, and returns the limiter's and the admin API's addresses once the
// limiter answers.
func startDemo(t *testing.T) (addr, admin string) {
	t.Helper()
	addr, origin, admin := loopback.Addr(t), loopback.Addr(t), loopback.Addr(t)
	runCaddy(t, "../..", []string{"STREAMLIMIT_ADDR=" + addr, "STREAMLIMIT_ORIGIN=" + origin, "STREAMLIMIT_ADMIN=" + admin},
		"run", "--config", "Caddyfile")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			return addr, admin
		}
		if time.Now().After(deadline) {
			t.Fatal("the demo never started listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDemoCaddyfile runs the committed demo and walks the README's curl
// session, and checks the demo page is served without taking a slot.
func TestDemoCaddyfile(t *testing.T) {
	addr, _ := startDemo(t)
	get := func(method, path string, hdr ...string) (*http.Response, string, error) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}

	for _, path := range []string{"/", "/assets/demo.js", "/assets/demo.css", "/assets/hls.js/hls.light.min.js"} {
		resp, body, err := get(http.MethodGet, path, "X-User-Id", "alice")
		if err != nil || resp.StatusCode != http.StatusOK || len(body) == 0 || resp.Header.Get("Stream-Id") != "" {
			t.Fatalf("demo page file %s: %v %v", path, err, resp)
		}
	}

	var ids []string
	var firstSegment string // the first stream's first segment, as its manifest names it
	screen := func(n int) string { return strconv.Itoa(n) }
	for i := range 3 {
		resp, body, err := get(http.MethodGet, "/hls/index.m3u8", "X-User-Id", "alice", "X-Screen", screen(i+1))
		if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "#EXTM3U") {
			t.Fatalf("stream %d: %v %v %q", i+1, err, resp, body)
		}
		ids = append(ids, resp.Header.Get("Stream-Id"))
		if i == 0 {
			for _, line := range strings.Split(body, "\n") {
				if line != "" && !strings.HasPrefix(line, "#") {
					u, _ := resp.Request.URL.Parse(line)
					firstSegment = u.RequestURI()
					break
				}
			}
		}
	}
	// The first screen asking again is the same playback; a fourth screen
	// is refused.
	if resp, _, _ := get(http.MethodGet, "/hls/index.m3u8", "X-User-Id", "alice", "X-Screen", screen(1)); resp.StatusCode != http.StatusOK || resp.Header.Get("Stream-Id") != ids[0] {
		t.Fatalf("screen 1 again: %s, stream %q, want its own %q", resp.Status, resp.Header.Get("Stream-Id"), ids[0])
	}
	resp, body, _ := get(http.MethodGet, "/hls/index.m3u8", "X-User-Id", "alice", "X-Screen", screen(4))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, `"stream_limit_exceeded"`) {
		t.Fatalf("fourth stream: %s %q", resp.Status, body)
	}
	resp, body, _ = get(http.MethodGet, firstSegment, "X-User-Id", "alice")
	if resp.StatusCode != http.StatusOK || len(body) < 1000 {
		t.Fatalf("segment of a live stream: %s, %d bytes", resp.Status, len(body))
	}
	resp, body, _ = get(http.MethodGet, "/streams", "X-User-Id", "alice")
	if resp.StatusCode != http.StatusOK || strings.Count(body, `"id"`) != 3 {
		t.Fatalf("stream list: %s %s", resp.Status, body)
	}
	if resp, _, _ = get(http.MethodDelete, "/hls/index.m3u8", "X-User-Id", "alice", "Stream-Id", ids[0]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	if resp, _, _ = get(http.MethodGet, "/hls/index.m3u8", "X-User-Id", "alice", "X-Screen", screen(4)); resp.StatusCode != http.StatusOK {
		t.Fatalf("start after DELETE: %s", resp.Status)
	}
	if resp, body, _ = get(http.MethodGet, "/hls/index.m3u8"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no user: %s %s", resp.Status, body)
	}
}

// runCaddy runs the built Caddy with args, in dir with env added to this
// process's, until the test ends; a failed test shows its output.
func runCaddy(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(caddyBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("caddy output:\n%s", logs)
		}
	})
}
