package caddymodule

import (
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// How a stream id travels: set on responses in the Stream-Id header, and
// read from requests in that header or the stream_id query parameter or,
// with path_token, in a token (token.go): in the query of a manifest's URL
// and in the path of any other file's. Every form is taken off the request
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

// carriedID is the stream id a request carries, and how.
type carriedID struct {
	id string
	// token is the token that carried the id, whose binding to the
	// request's path is still to be checked; nil when a bare id came in
	// the header or the query.
	token *pathToken
}

// takeStreamID returns the stream id a request carries, in the Stream-Id
// header or the stream_id query parameter (a bare id or, with withToken, a
// token) or, with withToken, a path token; or none. Ids are canonical
// UUIDs; anything else is refused rather than guessed at.
func takeStreamID(r *http.Request, withToken bool) (carriedID, error) {
	var fromPath *pathToken
	if withToken {
		var err error
		if fromPath, err = stripPathToken(r.URL); err != nil {
			return carriedID{}, err
		}
	}
	// Every form the id travels in is taken off the request here, so that
	// the origin never sees one, whatever happens next.
	id := r.Header.Get(StreamIDHeader)
	r.Header.Del(StreamIDHeader)
	fromQuery, inQuery := takeQueryParam(r.URL, StreamIDQuery)
	if withToken && inQuery && strings.Contains(fromQuery, ".") {
		// A token in the query: a manifest's. It wins over a bare id in
		// the header (a player may echo one), as a path token does.
		t, err := parseToken(fromQuery)
		if err != nil || t.scope == 0 || fromPath != nil {
			return carriedID{}, errBadStreamID
		}
		i := strings.LastIndexByte(r.URL.Path, '/') + 1
		t.prefix, t.rest = r.URL.Path[:i], r.URL.Path[i:]
		return carriedID{id: t.id, token: &t}, nil
	}
	switch {
	case fromPath != nil:
		return carriedID{id: fromPath.id, token: fromPath}, nil
	case id == "" && inQuery:
		id = fromQuery
	case id == "":
		return carriedID{}, nil
	}
	id, err := parseStreamID(id)
	return carriedID{id: id}, err
}

// takeQueryParam removes every name=value pair of the query whose name is
// name (percent-encoded or not) and returns the first value. The other
// pairs are kept byte for byte.
func takeQueryParam(u *url.URL, name string) (string, bool) {
	raw := u.RawQuery
	if !strings.Contains(raw, name) && !strings.Contains(raw, "%") {
		return "", false // the common case: nothing to parse
	}
	if v, ok := strings.CutPrefix(raw, name+"="); ok && !strings.ContainsAny(v, "&%+;") {
		u.RawQuery = "" // a manifest's tokenized URL: the token alone
		return v, true
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

// stripPathToken removes the path segment that is a token and returns it
// (its binding unchecked), or nil. A token segment that is malformed, or a
// second token, is an error, so that no token ever reaches the origin as
// a path.
func stripPathToken(u *url.URL) (*pathToken, error) {
	i := strings.Index(u.Path, "/"+PathTokenPrefix)
	if i < 0 {
		return nil, nil
	}
	seg := u.Path[i+1:]
	rest := ""
	if j := strings.IndexByte(seg, '/'); j >= 0 {
		seg, rest = seg[:j], seg[j+1:]
	}
	t, err := parseToken(strings.TrimPrefix(seg, PathTokenPrefix))
	if err != nil {
		return nil, err
	}
	t.prefix, t.rest, t.segment = u.Path[:i+1], rest, seg
	u.Path = strings.Replace(u.Path, "/"+seg, "", 1)
	if strings.Contains(u.Path, "/"+PathTokenPrefix) {
		return nil, errBadStreamID
	}
	if u.RawPath != "" {
		u.RawPath = strings.Replace(u.RawPath, "/"+seg, "", 1)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return &t, nil
}

// tokenLocation is the Location of the redirect that adds the stream's
// token to the URL the client asked for: relative to it, so that it is
// right whatever rewrite ran before us. A manifest's token goes in its
// query, so that the URIs in it resolve against the directory they were
// written for, whichever URL a player resolves them against (ffmpeg's DASH
// demuxer takes the one it asked for, not the one it was sent to); any
// other file's goes before its file name.
func tokenLocation(u *url.URL, token string) string {
	p := u.EscapedPath()
	file := p[strings.LastIndexByte(p, '/')+1:]
	if isManifest(u.Path) {
		return "./" + withQueryToken(file, u.RawQuery, token)
	}
	out := "./" + PathTokenPrefix + token + "/" + file
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out
}

// withQueryToken is ref with the query rawQuery and the token in it.
func withQueryToken(ref, rawQuery, token string) string {
	if rawQuery != "" {
		return ref + "?" + rawQuery + "&" + StreamIDQuery + "=" + token
	}
	return ref + "?" + StreamIDQuery + "=" + token
}

// parseStreamID returns the canonical form of a stream id a client sent.
func parseStreamID(s string) (string, error) {
	id, ok := lease.CanonicalID(s)
	if !ok {
		return "", errBadStreamID
	}
	return id, nil
}

// redirectToToken sends the player to the same URL (u, as it came) with
// the stream's token, made for that file: every URI it finds in the
// manifests it is then served carries the token too, with no change to
// the player.
func (h *Handler) redirectToToken(w http.ResponseWriter, u *url.URL, secret []byte, id string) {
	w.Header().Set(StreamIDHeader, id)
	w.Header().Set("Location", tokenLocation(u, tokenBody(secret, id, scopeFile, path.Clean(u.Path), "")))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
}
