package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestAdaptAllOptions pins the JSON that `caddy adapt` makes of a Caddyfile
// using every option, and shows the directive ordered after request_header
// and before reverse_proxy with no global order option.
func TestAdaptAllOptions(t *testing.T) {
	in, err := os.ReadFile("testdata/all-options.caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := json.Indent(&got, adapt(t, string(in)), "", "\t"); err != nil {
		t.Fatal(err)
	}
	got.WriteByte('\n')
	const golden = "testdata/all-options.json"
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Fatalf("adapted JSON differs from %s (run go test -run TestAdaptAllOptions -update to accept):\n%s", golden, got.String())
	}
	s := got.String()
	iHeader, iLimit, iProxy := strings.Index(s, `"headers"`), strings.Index(s, `"stream_limit"`), strings.Index(s, `"reverse_proxy"`)
	if !(iHeader < iLimit && iLimit < iProxy) {
		t.Fatalf("directive order: request_header at %d, stream_limit at %d, reverse_proxy at %d", iHeader, iLimit, iProxy)
	}

	// The JSON loads back into the handler with every option set.
	var tree any
	if err := json.Unmarshal(got.Bytes(), &tree); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(findHandler(tree, "stream_limit"))
	if err != nil {
		t.Fatal(err)
	}
	var h Handler
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	if !h.DryRun || !h.PathToken || h.Secret != "{env.STREAM_LIMIT_SECRET}" || h.Mode != ModeSession || h.Limit != "{http.request.header.X-Plan-Streams}" || h.Zone != "live" ||
		h.OnLimit != OnLimitEvictOldest || h.Status != 403 || h.OnStoreError != OnStoreErrorDeny || h.ListPath != "/video/streams" ||
		h.Lease != caddy.Duration(45e9) || h.ConfirmWithin >= 0 || h.Key != "{http.request.header.X-User-Id}" || !strings.Contains(string(h.StoreRaw), `"memory"`) {
		t.Fatalf("decoded handler lost an option: %+v", h)
	}
}

func TestCaddyfileErrorsNameTheOption(t *testing.T) {
	for _, c := range []struct {
		name, body, want string
	}{
		{"unknown option", "colour blue", `unrecognized option "colour"`},
		{"limit word", "limit lots", "limit:"},
		{"limit negative", "limit -2", "limit:"},
		{"limit missing", "limit", "limit: want one value"},
		{"limit two values", "limit 2 3", "limit: want one value"},
		{"mode", "mode stream", "mode:"},
		{"lease word", "lease soon", "lease:"},
		{"lease short", "lease 10ms", "lease:"},
		{"on_limit", "on_limit kick", "on_limit:"},
		{"status word", "status teapot", "status:"},
		{"status 200", "status 200", "status:"},
		{"on_store_error", "on_store_error ignore", "on_store_error:"},
		{"dry_run value", "dry_run yes", "dry_run:"},
		{"path_token value", "path_token on", "path_token:"},
		{"max_buffer word", "max_buffer lots", "max_buffer:"},
		{"max_buffer zero", "max_buffer 0", "max_buffer:"},
		{"max_buffer over a day", "mode session\n\t\tmax_buffer 24h", "max_buffer:"},
		{"confirm_within word", "confirm_within soon", "confirm_within:"},
		{"confirm_within zero", "confirm_within 0", "confirm_within:"},
		{"confirm_within missing", "confirm_within", "confirm_within: want one value"},
		{"confirm_within short", "mode session\n\t\tconfirm_within 100ms", "confirm_within: 100ms is shorter than the minimum 1s"},
		{"sharing unknown", "sharing maybe", `sharing: "maybe" is not "strict", "lenient" or "off"`},
		{"rewrite_hosts missing", "rewrite_hosts", "rewrite_hosts: want one or more values"},
		{"rewrite_hosts without path_token", "mode session\n\t\trewrite_hosts a.example", "rewrite_hosts: needs path_token"},
		{"rewrite_hosts URL", "mode session\n\t\tpath_token\n\t\trewrite_hosts https://a.example/", "rewrite_hosts:"},
		{"secret missing", "secret", "secret: want one value"},
		{"list_path relative", "list_path streams", "list_path:"},
		{"list_path empty", `list_path ""`, "list_path:"},
		{"store missing", "store", "store:"},
		{"store unknown", "store etcd", "memory, redis"},
		{"store memory option", "store memory {\n\t\tsize 10\n\t}", "store memory"},
		{"repeated option", "limit 2\n\t\tlimit 3", "given twice"},
		{"zone missing", "zone", "zone: want one value"},
		{"key missing", "key", "key: want one value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Parsing refuses what it cannot read; Validate what makes no
			// sense. Either way the message names the option.
			cf := "http://localhost:8080 {\n\tstream_limit {\n\t\t" + c.body + "\n\t}\n\treverse_proxy localhost:8081\n}\n"
			cfg, _, err := caddyAdapt(cf)
			if err == nil {
				err = validateConfig(t, string(cfg))
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%q: error %v, want one containing %q", c.body, err, c.want)
			}
		})
	}
	if _, _, err := caddyAdapt("http://localhost:8080 {\n\tstream_limit extra\n}\n"); err == nil {
		t.Fatal("an argument on the directive line was accepted")
	}
}

func TestJSONValidationNamesTheOption(t *testing.T) {
	for _, c := range []struct{ handler, want string }{
		{`{"mode":"stream"}`, "mode:"},
		{`{"on_limit":"kick"}`, "on_limit:"},
		{`{"on_store_error":"ignore"}`, "on_store_error:"},
		{`{"lease":1000000}`, "lease:"},
		{`{"status":302}`, "status:"},
		{`{"limit":-1}`, "limit:"},
		{`{"limit":"three"}`, "limit:"},
		{`{"limit":true}`, "limit:"},
		{`{"list_path":"x"}`, "list_path:"},
		{`{"secret":"short"}`, "secret:"},
		{`{"store":{"type":"etcd"}}`, "store"},
		// Past 24h a lease overflowed the memory store's clock (every lease
		// born expired: no limit) and the tombstones' on both stores.
		{`{"lease":"86000d"}`, "lease: 2064000h0m0s is longer than the maximum 24h0m0s"},
		{`{"lease":"11000d"}`, "lease:"},
		{`{"lease":"25h"}`, "lease:"},
		{`{"path_token":true}`, "path_token: needs mode session"},
		{`{"max_buffer":-1}`, "max_buffer:"},
		{`{"confirm_within":"500ms"}`, "confirm_within:"},
		{`{"max_buffer":"23h59m31s"}`, "max_buffer:"},
		{`{"mode":"session","path_token":true,"rewrite_hosts":[""]}`, "rewrite_hosts:"},
		{`{"mode":"connection","path_token":true}`, "path_token:"},
		{`{"store":{"type":"redis","timeout":"1ns"}}`, "timeout: 1ns is shorter than the minimum 10ms"},
		{`{"store":{"type":"redis","timeout":-1}}`, "timeout:"},
	} {
		cfg := `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` +
			`{"handler":"stream_limit",` + c.handler[1:] + `]}]}}}}}`
		err := validateConfig(t, cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.handler, err, c.want)
		}
	}
}

// validateConfig provisions a JSON config without running it.
func validateConfig(t *testing.T, cfg string) error {
	t.Helper()
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatalf("%v: %s", err, cfg)
	}
	return caddy.Validate(&c)
}

func ctxForTest() caddy.Context {
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	return ctx
}

func TestDirectiveBesideReverseProxyWithoutOrder(t *testing.T) {
	// No route block, no order option: stream_limit must run before
	// reverse_proxy and see the user set by request_header.
	p := startCaddy(t, `
	request_header X-User-Id {http.request.uri.query.account}
	stream_limit {
		mode session
		limit 1
	}
	reverse_proxy {upstream}`)
	if r, body := p.do(http.MethodGet, "/a.m3u8?account=x", ""); r.StatusCode != http.StatusOK || r.Header.Get(StreamIDHeader) == "" {
		t.Fatalf("first start: %s %s", r.Status, body)
	}
	if r, _ := p.do(http.MethodGet, "/a.m3u8?account=x", ""); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second start: %s, want 429", r.Status)
	}
}

// findHandler returns the first handler object of the given name in a
// config tree, or nil.
func findHandler(v any, name string) map[string]any {
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == name {
			return v
		}
		for _, x := range v {
			if h := findHandler(x, name); h != nil {
				return h
			}
		}
	case []any:
		for _, x := range v {
			if h := findHandler(x, name); h != nil {
				return h
			}
		}
	}
	return nil
}
