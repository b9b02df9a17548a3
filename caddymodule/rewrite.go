package caddymodule

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"

	"github.com/streamlimit/caddy-streamlimit/manifest"
)

// With path_token, the manifests a stream is served are rewritten so that
// every URI in them on the request's own host carries the stream's token,
// wherever it points: relative with ../, an absolute path, or an absolute
// URL. Each becomes a path relative to the manifest, with the token as the
// directory before the file name, so that it stays right behind
// handle_path, uri strip_prefix or rewrite. Other hosts (ad servers, key
// servers) are left alone; every byte that is not a URI passes untouched.

// maxManifest is the largest manifest held back and rewritten; a larger
// one is refused (502) rather than buffered, or passed on without tokens.
const maxManifest = 16 << 20

// tokenVar is the request variable that holds the token a request's
// stream id came in (*pathToken): when it came in the path, the directory
// the client resolves a manifest's URIs against holds the token. (A
// variable, not a context value: it costs no copy of the request on every
// segment.)
const tokenVar = "stream_limit.token"

// startVar marks a request that starts its stream (answerStart).
const startVar = "stream_limit.start"

// prepareManifestRequest asks the origin for the whole manifest as it is:
// not compressed, not a range, not a 304 (what the client cached was
// rewritten for its stream, and the origin's validators do not know it).
func prepareManifestRequest(r *http.Request) {
	for _, h := range []string{"Accept-Encoding", "Range", "If-Range", "If-None-Match", "If-Modified-Since"} {
		r.Header.Del(h)
	}
}

// manifestWriter holds back a manifest response to rewrite it; any other
// response (an error, a file that is no manifest) passes straight through.
type manifestWriter struct {
	http.ResponseWriter
	path      string
	holding   bool
	passed    bool // the response is passed through as it comes
	status    int
	body      *[]byte // from bufs, while holding
	oversized bool
}

// bufs holds the buffers manifests are held back in and rewritten into,
// so that a player re-reading its live playlist costs no new ones; a
// buffer larger than maxPooledBuf is left to the collector.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledBuf = 1 << 20

func getBuf() *[]byte { return bufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if b != nil && cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		bufs.Put(b)
	}
}

func (w *manifestWriter) WriteHeader(code int) {
	if w.holding || w.passed {
		return
	}
	if code == http.StatusOK && manifest.Detect(w.Header().Get("Content-Type"), w.path) != manifest.None {
		w.holding, w.status, w.body = true, code, getBuf()
		if n, err := strconv.Atoi(w.Header().Get("Content-Length")); err == nil && n > cap(*w.body) && n <= maxManifest {
			*w.body = make([]byte, 0, n)
		}
		return
	}
	w.passed = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *manifestWriter) Write(b []byte) (int, error) {
	if !w.holding && !w.passed {
		w.WriteHeader(http.StatusOK)
	}
	if !w.holding {
		return w.ResponseWriter.Write(b)
	}
	if len(*w.body)+len(b) > maxManifest {
		w.oversized = true
	}
	if !w.oversized {
		*w.body = append(*w.body, b...)
	}
	return len(b), nil
}

// FlushError flushes what passes through; a manifest held back is not
// flushed before it is rewritten.
func (w *manifestWriter) FlushError() error {
	if w.holding {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.NewResponseController reach the writer underneath.
func (w *manifestWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveRewriting passes a request of a stream (id) on and, when what
// comes back is a manifest, rewrites it so that its URIs carry the stream.
func (h *Handler) serveRewriting(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, ls *localStream) error {
	id := ls.ref.id
	if isManifest(r.URL.Path) {
		prepareManifestRequest(r)
	}
	mw := &manifestWriter{ResponseWriter: w, path: r.URL.Path}
	// The URL as the client's URIs resolve against it and as tokens are
	// checked: the handlers after this one (rewrite) may change r.URL.
	asked := *r.URL
	err := next.ServeHTTP(mw, r)
	defer putBuf(mw.body)
	if err != nil || !mw.holding {
		return err
	}
	body := *mw.body
	if mw.oversized {
		h.logger.Warn("manifest larger than the rewriting limit; refused",
			zap.String("zone", h.Zone), zap.String("path", r.URL.Path), zap.Int("limit", maxManifest))
		return caddyhttp.Error(http.StatusBadGateway, errManifestTooLarge)
	}
	if enc := w.Header().Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		// The origin compressed it although it was not asked to.
		decoded, err := decodeManifest(enc, body)
		if errors.Is(err, errUnknownEncoding) {
			h.logger.Warn("manifest in an encoding the limiter cannot read; passed on without tokens",
				zap.String("zone", h.Zone), zap.String("content_encoding", enc))
			return writeManifest(w, mw.status, body)
		}
		if err != nil {
			return caddyhttp.Error(http.StatusBadGateway, err)
		}
		body = decoded
		w.Header().Del("Content-Encoding")
	}
	kind := manifest.Detect(w.Header().Get("Content-Type"), asked.Path)
	secret, err := h.idSecretFor(r)
	if err != nil {
		// No secret to make tokens with (the store is down): the player
		// gets the manifest as it is, and its next start is a new stream.
		h.logger.Warn("no id secret to make tokens with; manifest passed on without them",
			zap.String("zone", h.Zone), zap.Error(err))
		return writeManifest(w, mw.status, body)
	}
	tz := &tokenizer{base: url.URL{Scheme: "http", Host: r.Host, Path: asked.Path, RawPath: asked.RawPath},
		dir: dirOf(asked.EscapedPath()), id: id, host: r.Host, more: h.RewriteHosts, secret: secret, stream: ls}
	if r.TLS != nil {
		tz.base.Scheme = "https"
	}
	if t, _ := caddyhttp.GetVar(r.Context(), tokenVar).(*pathToken); t != nil {
		tz.aux = t.aux
		if t.segment != "" {
			tz.dir += t.segment + "/"
		}
	}
	if start, _ := caddyhttp.GetVar(r.Context(), startVar).(bool); start || kind == manifest.DASH {
		sum, serr := manifest.Summarize(kind, body)
		tz.video = sum.Video
		if start && (serr != nil || !(sum.Master || sum.Ended)) {
			// A live playlist is read again by the player, which must then
			// ask for the tokenized URL; one the limiter cannot read gets
			// the token in its URL all the same.
			for _, k := range []string{"Content-Type", "Content-Length", "Content-Encoding", "Content-Range",
				"Accept-Ranges", "ETag", "Last-Modified", "Cache-Control", "Expires", "Age", "Vary"} {
				w.Header().Del(k)
			}
			h.redirectToToken(w, &asked, secret, id)
			return nil
		}
	}
	outBuf := getBuf()
	defer putBuf(outBuf)
	out, rerr := rewriteFor(*outBuf, kind, body, tz)
	if rerr == nil && !sameArray(out, body) {
		*outBuf = out // it may have grown: the larger buffer goes back
	}
	if rerr != nil {
		h.logger.Warn("manifest could not be read; passed on without tokens",
			zap.String("zone", h.Zone), zap.String("path", r.URL.Path), zap.Error(rerr))
		out = body
	}
	// Rewritten for this stream: the origin's validators and ranges do not
	// describe it, and no shared cache may hand it to another stream.
	for _, k := range []string{"ETag", "Last-Modified", "Accept-Ranges", "Content-Range"} {
		w.Header().Del(k)
	}
	w.Header().Set("Cache-Control", "private, no-cache")
	return writeManifest(w, mw.status, out)
}

// rewriteFor rewrites a manifest for tz's stream into dst's array: by the
// playlist's plan when one is kept (plan.go), else in full, keeping the
// plan it has.
func rewriteFor(dst []byte, kind manifest.Kind, body []byte, tz *tokenizer) ([]byte, error) {
	if kind != manifest.HLS {
		return manifest.AppendEdits(dst, kind, body, tz.edit)
	}
	if p := plans.find(body, tz.aux, tz.video); p != nil {
		if out, ok := p.apply(dst, tz); ok {
			return out, nil
		}
	}
	pl := newPlanner(tz, body)
	out, err := manifest.AppendEdits(dst, kind, body, pl.edit)
	if err == nil {
		pl.done(body)
	}
	return out, err
}

// sameArray reports whether a and b share their first byte's place.
func sameArray(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

var errManifestTooLarge = errors.New("manifest too large to rewrite")

var errUnknownEncoding = errors.New("unknown content encoding")

// decodeManifest undoes a manifest's Content-Encoding: gzip, br or zstd,
// up to maxManifest bytes decoded.
func decodeManifest(enc string, body []byte) ([]byte, error) {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(4*maxManifest))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	default:
		return nil, errUnknownEncoding
	}
	out, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err == nil && len(out) > maxManifest {
		err = errManifestTooLarge
	}
	return out, err
}

func writeManifest(w http.ResponseWriter, status int, body []byte) error {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// tokenizer makes the form of each URI of one manifest that carries the
// stream's token.
type tokenizer struct {
	base url.URL // the manifest's URL, as the handler sees it
	dir  string  // the escaped directory the client resolves the manifest's URIs against
	id   string
	// host and more are the hosts whose URLs are the origin's: the
	// request's, and rewrite_hosts; hosts is both, made when needed.
	host   string
	more   []string
	hosts  []string
	secret []byte
	aux    bool // the manifest is an auxiliary track's playlist: its segments add no time
	video  bool // some track is video: audio and text tracks add no time
	// last is the MAC made last: the URIs of one directory share it.
	lastScope      byte
	lastPath, last string
	// prefixes holds, for plain relative URIs (a file name, with
	// directories or not), what goes before the file name in their
	// tokenized form, by directory and extra: most of a playlist's
	// segments share one, and few playlists have more than a handful.
	prefixes []keptPrefix
	// stream keeps prefixes across the manifests rewritten for it.
	stream *localStream
	// lastDur and lastExtra are the extra made last.
	lastDur   time.Duration
	lastExtra string
}

type prefixKey struct{ dir, extra string }

// maxManifestPrefixes bounds the prefixes a tokenizer keeps, and so its
// search for one; those beyond are found in the stream's, or made again.
const maxManifestPrefixes = 32

type keptPrefix struct {
	key    prefixKey
	prefix string
}

// ref returns the form of a manifest URI that carries the stream's token,
// as a path relative to the manifest's directory, or false to keep it as
// written.
func (tz *tokenizer) ref(ref manifest.Ref) (string, bool) {
	e, ok := tz.edit(ref)
	return e.Insert + ref.URI[e.From:], ok
}

// edit is ref as a manifest.Edit: for the common case, a segment named
// relative to its playlist, the tokenized prefix of its directory before
// its file name, resolved once per directory.
func (tz *tokenizer) edit(ref manifest.Ref) (manifest.Edit, bool) {
	if i, ok := plainIndex(ref); ok {
		prefix, ok := tz.prefixFor(prefixKey{ref.URI[:i], tz.extra(ref)}, ref)
		return manifest.Edit{Insert: prefix, From: i}, ok
	}
	s, ok := tz.slowRef(ref)
	return manifest.Edit{Insert: s, From: len(ref.URI)}, ok
}

// plainIndex reports whether ref takes the common way, a tokenized prefix
// of its directory before its file name, and where that name begins.
func plainIndex(ref manifest.Ref) (int, bool) {
	if ref.Base != "" || ref.Template || isPlaylistRole(ref.Role) || ref.Role == manifest.RoleBaseURL || !plainRelative(ref.URI) {
		return 0, false
	}
	return strings.LastIndexByte(ref.URI, '/') + 1, true
}

// prefixFor is the tokenized prefix of the URIs of key, made for a URI
// like the one given (its role, media and track make the token's extra).
func (tz *tokenizer) prefixFor(key prefixKey, like manifest.Ref) (string, bool) {
	// The prefix used last first: a playlist's segments come one after
	// another.
	for k := len(tz.prefixes) - 1; k >= 0; k-- {
		if tz.prefixes[k].key == key {
			return tz.prefixes[k].prefix, true
		}
	}
	// Kept for the stream: the base (the manifest's directory) and the
	// client's directory name it with the key.
	kept := streamPrefix{tz.dir, tz.base.Path[:strings.LastIndexByte(tz.base.Path, '/')+1], key}
	prefix, ok := "", false
	if tz.stream != nil {
		prefix, ok = tz.stream.prefix(kept)
	}
	if !ok {
		full, tokenized := tz.slowRef(manifest.Ref{Role: like.Role, URI: key.dir + "x", Duration: like.Duration, Timeline: like.Timeline, Track: like.Track})
		if !tokenized {
			return "", false
		}
		prefix = full[:len(full)-1]
		if tz.stream != nil {
			tz.stream.keepPrefix(kept, prefix)
		}
	}
	if len(tz.prefixes) < maxManifestPrefixes {
		tz.prefixes = append(tz.prefixes, keptPrefix{key, prefix})
	}
	return prefix, true
}

// plainRelative reports whether uri is a relative path of plain names
// (no scheme, query, fragment, escapes, dot segments or variables), which
// resolves against its manifest's directory by joining.
func plainRelative(uri string) bool {
	if uri == "" || uri[0] == '/' || uri[len(uri)-1] == '/' {
		return false
	}
	start := 0 // of the path segment being read
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; notPlain[c] {
			if c != '/' || !plainSegment(uri[start:i]) {
				return false
			}
			start = i + 1
		}
	}
	return plainSegment(uri[start:])
}

// plainSegment reports whether a path segment of a URI is a plain name.
func plainSegment(seg string) bool {
	return seg != "" && seg != "." && seg != ".." && !(seg[0] == '~' && strings.HasPrefix(seg, PathTokenPrefix))
}

// notPlain marks the bytes plainRelative stops at: "/", and those that
// make a URI more than a path of plain names.
var notPlain = func() (t [256]bool) {
	for _, c := range ":?#%\\{}$/" {
		t[c] = true
	}
	return t
}()

// slowRef is ref for any URI: parsed, resolved, checked for its host.
func (tz *tokenizer) slowRef(ref manifest.Ref) (string, bool) {
	u, err := url.Parse(ref.URI)
	if err != nil || strings.Contains(ref.URI, PathTokenPrefix) {
		return "", false
	}
	if !u.IsAbs() && u.Host == "" && !strings.HasPrefix(u.Path, "/") && ref.Base != "" {
		// Relative to a BaseURL in scope, which carries the token itself.
		return "", false
	}
	if tz.hosts == nil {
		tz.hosts = append([]string{tz.host}, tz.more...)
	}
	target, err := ref.Resolve(&tz.base)
	if err != nil || !manifest.SameHost(target, tz.hosts) {
		return "", false
	}
	p, decoded := target.EscapedPath(), target.Path
	if isPlaylistRole(ref.Role) {
		// A manifest's token goes in its query (see tokenLocation).
		rel := relativePath(tz.dir, p)
		rel = withQueryToken(rel, target.RawQuery, tz.token(scopeFile, decoded, tz.extra(ref)))
		if target.Fragment != "" {
			rel += "#" + target.EscapedFragment()
		}
		return rel, true
	}
	// Any other file's goes before its file name or, for a template whose
	// directories the player fills in, before the first of those.
	i, di := strings.LastIndexByte(p, '/')+1, strings.LastIndexByte(decoded, '/')+1
	scope := scopeDir
	switch {
	case ref.Template && strings.Contains(p[:i], "$"):
		i = strings.LastIndexByte(p[:strings.IndexByte(p, '$')], '/') + 1
		di = strings.LastIndexByte(decoded[:strings.IndexByte(decoded, '$')], '/') + 1
		scope = scopePrefix
	case ref.Role == manifest.RoleBaseURL:
		scope = scopePrefix
	}
	tokenized := p[:i] + PathTokenPrefix + tz.token(scope, decoded[:di], tz.extra(ref)) + "/" + p[i:]
	rel := relativePath(tz.dir, tokenized)
	if target.RawQuery != "" {
		rel += "?" + target.RawQuery
	}
	if target.Fragment != "" {
		rel += "#" + target.EscapedFragment()
	}
	return rel, true
}

// token is the token for a scope and path, reusing the MAC of the URI
// before when it is for the same.
func (tz *tokenizer) token(scope byte, path, extra string) string {
	if scope != tz.lastScope || path != tz.lastPath {
		tz.lastScope, tz.lastPath, tz.last = scope, path, scopeMAC(tz.secret, tz.id, scope, path)
	}
	return joinToken(tz.id, scope, tz.last, extra)
}

// extra is what a URI's token says for the lease: the media of a segment
// of the main track, or that a playlist is of an auxiliary track.
func (tz *tokenizer) extra(ref manifest.Ref) string {
	aux := tz.aux || ref.Track == "text" || (tz.video && ref.Track == "audio")
	switch ref.Role {
	case manifest.RoleMedia:
		if ref.Track == "audio" || ref.Track == "text" {
			return auxExtra
		}
	case manifest.RoleSegment, manifest.RolePart:
		d := ref.Duration
		if d == 0 && ref.Timeline != nil {
			d = ref.Timeline.Average()
		}
		if !aux {
			if d != tz.lastDur || tz.lastExtra == "" {
				tz.lastDur, tz.lastExtra = d, mediaExtra(d)
			}
			return tz.lastExtra
		}
	}
	return ""
}

// isPlaylistRole reports whether URIs of a role name one manifest file.
func isPlaylistRole(r manifest.Role) bool {
	switch r {
	case manifest.RolePlaylist, manifest.RoleMedia, manifest.RoleIFramePlaylist, manifest.RoleRenditionReport,
		manifest.RoleLocation, manifest.RoleSteering, manifest.RoleAsset, manifest.RoleSessionData:
		return true
	}
	return false
}

// relativePath is the relative reference that leads from directory dir
// (ending in "/") to path to, both absolute and escaped.
func relativePath(dir, to string) string {
	from := strings.Split(strings.TrimSuffix(dir, "/"), "/")
	dest := strings.Split(to, "/")
	common := 0
	for common < len(from) && common < len(dest)-1 && from[common] == dest[common] {
		common++
	}
	var b strings.Builder
	for range len(from) - common {
		b.WriteString("../")
	}
	rest := strings.Join(dest[common:], "/")
	if b.Len() == 0 && (rest == "" || strings.Contains(strings.SplitN(rest, "/", 2)[0], ":")) {
		b.WriteString("./") // "a:b" would read as a scheme
	}
	b.WriteString(rest)
	return b.String()
}

// markToken notes the token r's stream id came in.
func markToken(r *http.Request, t *pathToken) {
	caddyhttp.SetVar(r.Context(), tokenVar, t)
}
