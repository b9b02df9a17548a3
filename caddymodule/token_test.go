package caddymodule

import "testing"

// TestTokenScopes: a token is good for the paths its scope allows, with
// dot segments resolved as a file server resolves them, and for no path
// outside it.
func TestTokenScopes(t *testing.T) {
	secret := []byte("0123456789abcdef")
	const id = "00000000-0000-8000-8000-000000000000"
	made := func(scope byte, path string) pathToken {
		tok, err := parseToken(tokenBody(secret, id, scope, path, ""))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, c := range []struct {
		name         string
		scope        byte
		madeFor      string
		prefix, rest string
		ok           bool
	}{
		{"file", scopeFile, "/t/index.m3u8", "/t/", "index.m3u8", true},
		{"file, another file beside it", scopeFile, "/t/index.m3u8", "/t/", "other.m3u8", false},
		{"file, through a dot segment", scopeFile, "/t/index.m3u8", "/t/x/../", "index.m3u8", true},
		{"directory", scopeDir, "/t/v0/", "/t/v0/", "seg00.ts", true},
		{"directory, a subdirectory", scopeDir, "/t/v0/", "/t/v0/", "sub/seg00.ts", false},
		{"directory, ../ before the token", scopeDir, "/t/segments/", "/t/v0/../segments/", "a000.ts", true},
		{"directory, ../ after the token", scopeDir, "/t/v0/", "/t/v0/", "../v1/seg00.ts", false},
		{"directory, another directory", scopeDir, "/t/v0/", "/t/v1/", "seg00.ts", false},
		{"prefix, below", scopePrefix, "/t/", "/t/", "v1/seg-1.m4s", true},
		{"prefix, escaping with ../", scopePrefix, "/t/", "/t/", "../../u/seg-1.m4s", false},
		{"prefix, the directory itself", scopePrefix, "/t/", "/t/", "", false},
		{"root directory", scopeDir, "/", "/", "seg.ts", true},
	} {
		tok := made(c.scope, c.madeFor)
		tok.prefix, tok.rest = c.prefix, c.rest
		if got := tok.boundBy(secret); got != c.ok {
			t.Errorf("%s: %s + %s bound %v, want %v", c.name, c.prefix, c.rest, got, c.ok)
		}
		if tok.boundBy([]byte("another secret!!")) {
			t.Errorf("%s: bound under another secret", c.name)
		}
	}
}

// TestCoversAgreesWithScopedPath: the allocation-free check of a token
// against the path it was found made for answers as scopedPath does, on
// clean paths and on paths with dot segments and doubled slashes.
func TestCoversAgreesWithScopedPath(t *testing.T) {
	prefixes := []string{"/", "/a/", "/a/b/", "/a/./", "/a/../", "/a//", "//", "a/", "/a", ""}
	rests := []string{"f.ts", "x/f.ts", "../f.ts", "./f.ts", "", "d/", "..", ".", "x//f.ts", "x/./f.ts"}
	paths := []string{"/", "/a/", "/a/b/", "/f.ts", "/a/f.ts", "/a/b/f.ts", "/a/x/f.ts", "/x/f.ts", "/a/b/x/f.ts", ""}
	for _, prefix := range prefixes {
		for _, rest := range rests {
			for _, scope := range []byte{scopeFile, scopeDir, scopePrefix} {
				tok := pathToken{scope: scope, prefix: prefix, rest: rest}
				sp, ok := tok.scopedPath()
				for _, p := range append(paths, sp) {
					if got, want := tok.covers(p), ok && sp == p; got != want {
						t.Errorf("%c %q + %q covers %q: %v, scopedPath says %q %v", scope, prefix, rest, p, got, sp, ok)
					}
				}
			}
		}
	}
}
