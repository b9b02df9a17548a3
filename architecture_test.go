package streamlimit

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestArchitecture keeps docs/ARCHITECTURE.md true: each package of ours
// imports only what its row there allows.
func TestArchitecture(t *testing.T) {
	const us = "github.com/streamlimit/caddy-streamlimit"
	// may lists, per package, the packages of ours it may import and
	// whether it may import Caddy; a package missing here is a new one that
	// the page (and this table) must place first.
	may := map[string]struct {
		ours   []string
		caddy  bool
		noHTTP bool // knows nothing of HTTP either
	}{
		"":                    {ours: []string{"caddymodule"}},
		"caddymodule":         {ours: []string{"lease", "manifest", "playhead"}, caddy: true},
		"lease":               {noHTTP: true},
		"lease/leasetest":     {ours: []string{"lease"}, noHTTP: true},
		"manifest":            {noHTTP: true},
		"playhead":            {noHTTP: true},
		"internal/loopback":   {},
		"internal/redistest":  {ours: []string{"internal/loopback"}},
		"internal/origintest": {ours: []string{"internal/loopback"}},
		"internal/testmedia":  {},
		"internal/faultproxy": {},
		"chaos":               {noHTTP: true},
		"cmd/caddy":           {ours: []string{""}, caddy: true},
		"bench":               {ours: []string{"lease", "internal/loopback", "internal/redistest", "internal/origintest"}},
	}
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, us), "/")
		rule, ok := may[name]
		if !ok {
			t.Errorf("package %q is not in docs/ARCHITECTURE.md's table", name)
			continue
		}
		for _, imp := range p.Imports {
			switch {
			case rule.noHTTP && strings.HasPrefix(imp, "net/http"):
				t.Errorf("%s imports %s: it must know nothing of HTTP", p.ImportPath, imp)
			case strings.HasPrefix(imp, "github.com/caddyserver/"):
				if !rule.caddy {
					t.Errorf("%s imports %s: it must not import Caddy", p.ImportPath, imp)
				}
			case imp == us || strings.HasPrefix(imp, us+"/"):
				dep := strings.TrimPrefix(strings.TrimPrefix(imp, us), "/")
				allowed := false
				for _, o := range rule.ours {
					allowed = allowed || o == dep
				}
				if !allowed {
					t.Errorf("%s imports %s, which docs/ARCHITECTURE.md does not allow", p.ImportPath, imp)
				}
			}
		}
	}
}
