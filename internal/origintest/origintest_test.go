package origintest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestBooks: a hit is logged when it arrives, a stream is served until
// its client leaves, and its end is then recorded under its prefix.
func TestBooks(t *testing.T) {
	o := Start(t)
	resp, err := http.Get("http://" + o.Addr + "/plain/a.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok /plain/a.m3u8" {
		t.Fatalf("plain path: %q", body)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+o.Addr+"/v/t1/slow/x.ts", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 3*188)); err != nil {
		t.Fatalf("the stream did not trickle: %v", err)
	}
	if n := o.Serving("/v/t1/"); n != 1 {
		t.Fatalf("Serving(/v/t1/) = %d during the stream, want 1", n)
	}
	if n := o.Serving("/v/t2/"); n != 0 {
		t.Fatalf("Serving(/v/t2/) = %d, want 0", n)
	}
	if !o.LastEnd("/v/").IsZero() {
		t.Fatal("LastEnd is set while the stream still runs")
	}
	left := time.Now()
	cancel()
	resp.Body.Close()
	for o.Serving("") != 0 {
		if time.Since(left) > 10*time.Second {
			t.Fatal("the origin never saw the client leave")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if end := o.LastEnd("/v/t1/"); end.Before(left) {
		t.Fatalf("LastEnd = %v, before the client left at %v", end, left)
	}
	if o.Hits("/v/t1/slow/x.ts") != 1 || o.Hits("/plain/") != 1 || o.Hits("") != 2 || o.Hits("/other") != 0 {
		t.Fatalf("hits: %v", o.Paths())
	}
	if p := o.Paths(); len(p) != 2 || p[0] != "/plain/a.m3u8" || p[1] != "/v/t1/slow/x.ts" {
		t.Fatalf("Paths = %v", p)
	}
}
