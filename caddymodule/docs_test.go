package caddymodule

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// syntaxBlock matches the placeholders of a syntax summary ("<n>",
// "[<matcher>]"), which is documentation, not a config to adapt.
var syntaxBlock = regexp.MustCompile(`<[a-z][a-z :|.-]*>`)

// TestDocsCaddyfileExamplesAdapt adapts every caddyfile example in the
// README and docs/, so that none of them rots. A snippet without a site
// is adapted inside one.
func TestDocsCaddyfileExamplesAdapt(t *testing.T) {
	files := []string{"../README.md", "../docs/CADDYFILE.md", "../docs/OPERATIONS.md", "../docs/SECURITY.md"}
	adapted := 0
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(string(b), "```caddyfile\n")
		for i, part := range parts[1:] {
			block, _, _ := strings.Cut(part, "```")
			if syntaxBlock.MatchString(block) || strings.Contains(block, "…") {
				continue
			}
			cf := block
			switch global, site := caddyfileShape(block); {
			case !global && !site:
				cf = "http://localhost:8080 {\n" + block + "\n}\n"
			case global && !site:
				cf = block + "\nhttp://localhost:8080 {\n\trespond ok\n}\n"
			}
			if _, _, err := caddyAdapt(cf); err != nil {
				t.Errorf("%s, example %d does not adapt: %v\n%s", file, i+1, err, block)
			}
			adapted++
		}
	}
	if adapted < 5 {
		t.Fatalf("only %d examples adapted", adapted)
	}
	t.Logf("%d examples adapted", adapted)
}

// TestDocsJSONExamplesLoad loads every handler example of docs/JSON.md into
// a Caddy config and validates it (provisioning the handler and its store).
func TestDocsJSONExamplesLoad(t *testing.T) {
	t.Setenv("STREAM_LIMIT_SECRET_FOR_DOCS", "sixteen-bytes-or-more")
	b, err := os.ReadFile("../docs/JSON.md")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(b), "```json\n")
	for i, part := range parts[1:] {
		handler, _, _ := strings.Cut(part, "```")
		cfg := `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` + handler + `]}]}}}}}`
		if err := validateConfig(t, cfg); err != nil {
			t.Errorf("docs/JSON.md example %d: %v\n%s", i+1, err, handler)
		}
	}
	if len(parts) < 4 {
		t.Fatalf("only %d JSON examples", len(parts)-1)
	}
}

// caddyfileShape tells whether a Caddyfile example has a global options
// block and a site block, or is a snippet of directives.
func caddyfileShape(block string) (global, site bool) {
	for _, line := range strings.Split(block, "\n") {
		if line == "" || line[0] == '\t' || line[0] == ' ' || line[0] == '#' || !strings.HasSuffix(line, "{") {
			continue
		}
		first := strings.Fields(line)[0]
		switch {
		case first == "{":
			global = true
		case strings.ContainsAny(first, ":."):
			site = true
		}
	}
	return global, site
}
