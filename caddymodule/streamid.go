package caddymodule

import (
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// How a stream id travels: set on responses in the Stream-Id header, and
// read from requests in that header, the stream_id query parameter, a path
// token (path_token: every relative URL a player resolves carries it) or,
// for segments, the stream cookie. Every form is taken off the request
// before it is passed on: the origin never sees an id.

// StreamIDHeader carries the stream id: set on every admitted response,
// read from requests that continue a stream.
const StreamIDHeader = "Stream-Id"

// StreamIDQuery is the query parameter that may carry the stream id.
const StreamIDQuery = "stream_id"

// errBadStreamID means a request carried something that is not a stream id.
var errBadStreamID = errors.New("malformed stream id")

// PathTokenPrefix starts the path segment that carries a stream id.
const PathTokenPrefix = "~sl-"

// carriedID is the stream id a request carries, and whether it came only
// from the cookie (which a stale or foreign value must not make fail).
type carriedID struct {
	id         string
	fromCookie bool
	inPath     bool // it came as the path token
}

// takeStreamID returns the stream id a request carries, in the Stream-Id
// header, the stream_id query parameter or (with pathToken) a path token
// or, for segments, the cookie; or none. It strips the path token from the
// request. Ids are canonical UUIDs; anything else is refused rather than
// guessed at (a malformed cookie is ignored).
func takeStreamID(r *http.Request, pathToken bool) (carriedID, error) {
	var fromPath string
	if pathToken {
		var err error
		if fromPath, err = stripPathToken(r.URL); err != nil {
			return carriedID{}, err
		}
	}
	// Every form the id travels in is taken off the request here, so that
	// the origin never sees one, whatever happens next.
	id := r.Header.Get(StreamIDHeader)
	r.Header.Del(StreamIDHeader)
	if fromQuery, ok := takeQueryParam(r.URL, StreamIDQuery); ok && id == "" {
		id = fromQuery
	}
	if id == "" {
		id = fromPath
	}
	cookie, hadCookie := takeCookie(r.Header, StreamIDCookie)
	if id == "" && hadCookie && pathToken && !isManifest(r.URL.Path) {
		// A manifest without a token is a new playback, even from a client
		// that played before: only segments fall back to the cookie.
		if id, err := parseStreamID(cookie); err == nil {
			return carriedID{id: id, fromCookie: true}, nil
		}
	}
	if id == "" {
		return carriedID{}, nil
	}
	inPath := fromPath != "" && id == fromPath
	id, err := parseStreamID(id)
	return carriedID{id: id, inPath: inPath}, err
}

// StreamIDCookie carries the stream id, with path_token, for players that
// drop the path token.
const StreamIDCookie = "streamlimit_id"

// takeQueryParam removes every name=value pair of the query whose name is
// name (percent-encoded or not) and returns the first value. The other
// pairs are kept byte for byte.
func takeQueryParam(u *url.URL, name string) (string, bool) {
	raw := u.RawQuery
	if !strings.Contains(raw, name) && !strings.Contains(raw, "%") {
		return "", false // the common case: nothing to parse
	}
	var value string
	found := false
	kept := make([]string, 0, strings.Count(raw, "&")+1)
	for _, pair := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				kept = append(kept, pair)
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				kept = append(kept, pair)
				continue
			}
		}
		if !found {
			value, _ = url.QueryUnescape(v)
			if value == "" {
				value = v // not decodable: parseStreamID refuses it
			}
		}
		found = true
	}
	if found {
		u.RawQuery = strings.Join(kept, "&")
	}
	return value, found
}

// takeCookie removes the cookie named name from the request's Cookie
// headers and returns its value. Other cookies are kept as they were sent.
func takeCookie(h http.Header, name string) (string, bool) {
	lines := h.Values("Cookie")
	if len(lines) == 0 {
		return "", false
	}
	var value string
	found := false
	kept := make([]string, 0, len(lines))
	for _, line := range lines {
		if !strings.Contains(line, name) {
			kept = append(kept, line)
			continue
		}
		parts := strings.Split(line, ";")
		rest := parts[:0]
		for _, part := range parts {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k == name {
				if !found {
					value, found = strings.Trim(v, `"`), true
				}
				continue
			}
			rest = append(rest, part)
		}
		if len(rest) > 0 {
			kept = append(kept, strings.TrimLeft(strings.Join(rest, ";"), " "))
		}
	}
	if found {
		h.Del("Cookie")
		for _, line := range kept {
			h.Add("Cookie", line)
		}
	}
	return value, found
}

// isManifest reports whether a path names an HLS playlist or a DASH
// manifest: the first request of a playback.
func isManifest(p string) bool {
	ext := strings.ToLower(path.Ext(p))
	return ext == ".m3u8" || ext == ".mpd"
}

// dirOf is the directory of a URL path, with its trailing slash.
func dirOf(p string) string {
	return p[:strings.LastIndexByte(p, '/')+1]
}

// stripPathToken removes the path segment that is a token and returns its
// id (unchecked). A token segment that holds no UUID, or a second token,
// is an error, so that no token ever reaches the origin as a path.
func stripPathToken(u *url.URL) (string, error) {
	i := strings.Index(u.Path, "/"+PathTokenPrefix)
	if i < 0 {
		return "", nil
	}
	seg := u.Path[i+1:]
	if j := strings.IndexByte(seg, '/'); j >= 0 {
		seg = seg[:j]
	}
	id := strings.TrimPrefix(seg, PathTokenPrefix)
	if _, err := parseStreamID(id); err != nil {
		return "", err
	}
	u.Path = strings.Replace(u.Path, "/"+seg, "", 1)
	if strings.Contains(u.Path, "/"+PathTokenPrefix) {
		return "", errBadStreamID
	}
	if u.RawPath != "" {
		u.RawPath = strings.Replace(u.RawPath, "/"+seg, "", 1)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return id, nil
}

// tokenLocation is the Location of the redirect that adds the stream's
// token: relative to the URL the client asked for (the token goes before
// the file name), so that it is right whatever rewrite ran before us.
func tokenLocation(u *url.URL, id string) string {
	p := u.EscapedPath()
	out := "./" + PathTokenPrefix + id + "/" + p[strings.LastIndexByte(p, '/')+1:]
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out
}

// parseStreamID returns the canonical form of a stream id a client sent.
func parseStreamID(s string) (string, error) {
	id, ok := lease.CanonicalID(s)
	if !ok {
		return "", errBadStreamID
	}
	return id, nil
}

// redirectToToken sends the player to the same URL with the stream's token
// in its path: every relative playlist and segment URL it resolves from
// there carries the token, with no change to the player. The Location is
// relative, so it holds whatever rewrite or handle_path ran before us.
func (h *Handler) redirectToToken(w http.ResponseWriter, r *http.Request, id string) {
	w.Header().Set(StreamIDHeader, id)
	w.Header().Set("Location", tokenLocation(r.URL, id))
	w.Header().Set("Cache-Control", "no-store")
	if isManifest(r.URL.Path) {
		// Some players (ffmpeg's DASH demuxer) resolve segment URLs against
		// the manifest URL they asked for, not the one they were sent to;
		// they do keep cookies, so the id rides in one too, scoped to the
		// directory the client asked for, for the segments only.
		clientPath := r.URL.Path
		if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
			clientPath = orig.URL.Path
		}
		http.SetCookie(w, &http.Cookie{Name: StreamIDCookie, Value: id, Path: dirOf(clientPath), HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	w.WriteHeader(http.StatusTemporaryRedirect)
}
