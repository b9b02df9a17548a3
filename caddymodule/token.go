package caddymodule

import (
	"crypto/hmac"
	"encoding/base64"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// A path token binds a stream to its title: it carries the stream's id,
// a scope (which paths it is good for) and a MAC of both under the id
// secret, so that every instance sharing the secret checks it without a
// store call. A token is only ever made for a path the stream's own
// manifests referenced (or for the file its start asked for), so an id
// cannot be carried to another title or directory.
//
//	<id>.<scope><mac>[.<extra>]
//
// A manifest's token travels in its query (stream_id=<token>), any other
// file's in its path, as the directory before the file name
// (…/~sl-<token>/<file>).
//
// The scopes are:
//
//	f  the one file after the token (a playlist, an MPD, a progressive file)
//	d  any file directly in the token's directory (the segments a playlist lists)
//	p  any path below the token's directory (a DASH BaseURL, a template
//	   whose directory is filled in by the player)
//
// The extra, not covered by the MAC, is what the stream's lease counts: a
// whole number of milliseconds of media for a segment of the stream's main
// track, or "a" for the playlist of an auxiliary track (audio beside video,
// subtitles), whose segments add no time. Changing it only changes how long
// the client's own slot is held.

// Token scopes.
const (
	scopeFile   byte = 'f'
	scopeDir    byte = 'd'
	scopePrefix byte = 'p'
)

// auxExtra marks the token of an auxiliary track's playlist.
const auxExtra = "a"

// macLen is how many bytes of the HMAC a token keeps: 72 bits.
const macLen = 9

// pathToken is a token as a request carried it.
type pathToken struct {
	id    string
	scope byte
	mac   string
	media time.Duration // the media of a main-track segment
	aux   bool          // a playlist of an auxiliary track
	// prefix is the request's (decoded) path before the token, ending in
	// "/"; rest is the path after it.
	prefix, rest string
	segment      string // the token's path segment as it came; "" when it came in the query
}

// parseToken reads the token segment s (after PathTokenPrefix). The id
// is canonicalized; a token with no scope has none (a bare id).
func parseToken(s string) (pathToken, error) {
	idPart, claim, _ := strings.Cut(s, ".")
	id, err := parseStreamID(idPart)
	if err != nil {
		return pathToken{}, err
	}
	t := pathToken{id: id}
	if claim == "" {
		return t, nil
	}
	scoped, extra, hasExtra := strings.Cut(claim, ".")
	if len(scoped) != 1+base64.RawURLEncoding.EncodedLen(macLen) || !isScope(scoped[0]) {
		return pathToken{}, errBadStreamID
	}
	t.scope, t.mac = scoped[0], scoped[1:]
	switch {
	case !hasExtra:
	case extra == auxExtra:
		t.aux = true
	default:
		ms, err := strconv.ParseUint(extra, 10, 32)
		if err != nil || ms == 0 {
			return pathToken{}, errBadStreamID
		}
		t.media = time.Duration(ms) * time.Millisecond
	}
	return t, nil
}

func isScope(c byte) bool { return c == scopeFile || c == scopeDir || c == scopePrefix }

// scopedPath is the path a token's MAC covers, or false when the request's
// path lies outside what the scope allows. Dot segments are resolved
// first, as the origin's file server will (a player that joins "../" to a
// tokenized directory asks for the file the manifest meant).
func (t pathToken) scopedPath() (string, bool) {
	dir := cleanDir(t.prefix)
	full := path.Clean(t.prefix + t.rest)
	if t.rest == "" || strings.HasSuffix(t.rest, "/") || !strings.HasPrefix(full, dir) || len(full) == len(dir) {
		return "", false
	}
	switch t.scope {
	case scopeFile:
		return full, true
	case scopeDir:
		return dir, !strings.Contains(full[len(dir):], "/")
	case scopePrefix:
		return dir, true
	}
	return "", false
}

// covers reports whether p is the path t's MAC covers (scopedPath), with
// no allocation when the request's path has no dot segments or doubled
// slashes, as the URIs the limiter writes have none.
func (t pathToken) covers(p string) bool {
	cleanPrefix := t.prefix == "/" || (len(t.prefix) > 2 && t.prefix[0] == '/' && t.prefix[len(t.prefix)-1] == '/' &&
		cleanSegments(t.prefix[1:len(t.prefix)-1], true))
	if !cleanPrefix || !cleanSegments(t.rest, t.scope == scopePrefix) {
		sp, ok := t.scopedPath()
		return ok && sp == p
	}
	switch t.scope {
	case scopeFile:
		return len(p) == len(t.prefix)+len(t.rest) && strings.HasPrefix(p, t.prefix) && p[len(t.prefix):] == t.rest
	case scopeDir, scopePrefix:
		return p == t.prefix
	}
	return false
}

// cleanSegments reports whether s is path segments joined by "/" (one
// only, unless many), none of them empty, "." or "..".
func cleanSegments(s string, many bool) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '/' {
			continue
		}
		if i < len(s) && !many {
			return false
		}
		if seg := s[start:i]; seg == "" || seg == "." || seg == ".." {
			return false
		}
		start = i + 1
	}
	return true
}

// cleanDir is a directory path with its dot segments resolved, ending in
// "/".
func cleanDir(p string) string {
	if d := path.Clean(p); d != "/" {
		return d + "/"
	}
	return "/"
}

// boundBy reports whether secret made the token for the path it came in.
func (t pathToken) boundBy(secret []byte) bool {
	p, ok := t.scopedPath()
	return ok && t.scope != 0 && hmac.Equal([]byte(t.mac), []byte(scopeMAC(secret, t.id, t.scope, p)))
}

// scopeMAC is the MAC of a token for stream id, scope and (decoded) path.
func scopeMAC(secret []byte, id string, scope byte, path string) string {
	var mac [macLen]byte
	lease.Tag(mac[:], secret, "stream_limit scope", id, string(scope), path)
	var out [(macLen + 2) / 3 * 4]byte
	base64.RawURLEncoding.Encode(out[:], mac[:])
	return string(out[:base64.RawURLEncoding.EncodedLen(macLen)])
}

// tokenBody is a token without PathTokenPrefix: the value of the query
// parameter that carries it.
func tokenBody(secret []byte, id string, scope byte, path, extra string) string {
	return joinToken(id, scope, scopeMAC(secret, id, scope, path), extra)
}

func joinToken(id string, scope byte, mac, extra string) string {
	s := id + "." + string(scope) + mac
	if extra != "" {
		s += "." + extra
	}
	return s
}

// mediaExtra is the extra of a main-track segment of duration d.
func mediaExtra(d time.Duration) string {
	ms := d.Milliseconds()
	if ms <= 0 {
		return ""
	}
	return strconv.FormatInt(min(ms, 1<<31), 10)
}

// bound reports whether the token a request carried was made for its
// path by an id secret this zone knows.
func (h *Handler) bound(r *http.Request, t pathToken) (bool, error) {
	return h.withSecrets(r, t.boundBy)
}
