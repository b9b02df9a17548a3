package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// denialReasons names each refusal in metrics, events and logs.
var denialReasons = map[string]string{
	"stream_limit_exceeded": "limit",
	"missing_user":          "missing_user",
	"bad_user":              "bad_user",
	"bad_stream_id":         "bad_stream_id",
	"missing_stream_id":     "missing_stream_id",
	"stream_not_found":      "stream_not_found",
	"stream_revoked":        "revoked",
	"bad_limit":             "bad_limit",
	"store_unavailable":     "store_error",
}

// errorBody is the JSON body of every refusal.
type errorBody struct {
	Error  string `json:"error"`
	Limit  *int   `json:"limit,omitempty"`
	Active *int   `json:"active,omitempty"`
}

// refuse answers a request that is not passed on. Where the server has
// error routes (handle_errors) the refusal goes through them, so operators
// can reshape it; otherwise the client gets the JSON body, since Caddy's
// bare error answer has none.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int, body errorBody) error {
	reason := denialReasons[body.Error]
	data := map[string]any{"status": status}
	if body.Limit != nil {
		data["limit"], data["active"] = *body.Limit, *body.Active
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	h.zone.denied(repl.ReplaceAll(h.Key, ""), reason, data)
	if ce := h.sampledLog.Check(zapcore.InfoLevel, "stream request refused"); ce != nil {
		ce.Write(h.logFields(r, zap.String("reason", reason), zap.Int("status", status))...)
	}
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Errors != nil && len(srv.Errors.Routes) > 0 {
		return caddyhttp.Error(status, errors.New(body.Error))
	}
	return writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

// streamListBody is what list_path and the admin API answer.
type streamListBody struct {
	Limit   int          `json:"limit"`
	Streams []streamInfo `json:"streams"`
}

type streamInfo struct {
	ID      string    `json:"id"`
	Started time.Time `json:"started"`
	Expires time.Time `json:"expires"`
}

func streamList(limit int, leases []lease.Lease) streamListBody {
	out := streamListBody{Limit: limit, Streams: make([]streamInfo, len(leases))}
	for i, l := range leases {
		out.Streams[i] = streamInfo{ID: l.ID, Started: l.Started.UTC(), Expires: l.Expires.UTC()}
	}
	return out
}

// errBadStreamID means a request carried something that is not a stream id.
var errBadStreamID = errors.New("malformed stream id")

// PathTokenPrefix starts the path segment that carries a stream id.
const PathTokenPrefix = "~sl-"

// carriedID is the stream id a request carries, and whether it came only
// from the cookie (which a stale or foreign value must not make fail).
type carriedID struct {
	id         string
	fromCookie bool
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
	id, err := parseStreamID(id)
	return carriedID{id: id}, err
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

// isPreflight reports whether r is a CORS preflight: OPTIONS with the
// headers a browser sends before a cross-origin request. Only those pass
// without a user; any other OPTIONS is a request like the rest (an origin
// may well answer it with the file).
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
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

func parseStreamID(s string) (string, error) {
	if len(s) != 36 {
		return "", errBadStreamID
	}
	if isCanonicalUUID(s) {
		return s, nil // the common case, with no allocation
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", errBadStreamID
	}
	return u.String(), nil
}

// isCanonicalUUID reports whether s is a UUID in lower-case hyphenated form.
func isCanonicalUUID(s string) bool {
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
