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

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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

// tokenInPathVar is the request variable that marks a request whose stream
// id came as a path token: the directory the client resolves a manifest's
// URIs against holds the token. (A variable, not a context value: it costs
// no copy of the request on every segment.)
const tokenInPathVar = "stream_limit.token_in_path"

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
	body      bytes.Buffer
	oversized bool
}

func (w *manifestWriter) WriteHeader(code int) {
	if w.holding || w.passed {
		return
	}
	if code == http.StatusOK && manifest.Detect(w.Header().Get("Content-Type"), w.path) != manifest.None {
		w.holding, w.status = true, code
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
	if w.body.Len()+len(b) > maxManifest {
		w.oversized = true
	}
	if !w.oversized {
		w.body.Write(b)
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
func (h *Handler) serveRewriting(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id string) error {
	if isManifest(r.URL.Path) {
		prepareManifestRequest(r)
	}
	mw := &manifestWriter{ResponseWriter: w, path: r.URL.Path}
	err := next.ServeHTTP(mw, r)
	if err != nil || !mw.holding {
		return err
	}
	body := mw.body.Bytes()
	if mw.oversized {
		h.logger.Warn("manifest larger than the rewriting limit; refused",
			zap.String("zone", h.Zone), zap.String("path", r.URL.Path), zap.Int("limit", maxManifest))
		return caddyhttp.Error(http.StatusBadGateway, errManifestTooLarge)
	}
	if enc := w.Header().Get("Content-Encoding"); enc != "" && enc != "identity" {
		// The origin compressed it although it was not asked to.
		if !strings.EqualFold(enc, "gzip") {
			h.logger.Warn("manifest in an encoding the limiter cannot read; passed on without tokens",
				zap.String("zone", h.Zone), zap.String("content_encoding", enc))
			return writeManifest(w, mw.status, body)
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(zr, maxManifest))
		}
		if err != nil {
			return caddyhttp.Error(http.StatusBadGateway, err)
		}
		w.Header().Del("Content-Encoding")
	}
	kind := manifest.Detect(w.Header().Get("Content-Type"), r.URL.Path)
	base := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath}
	if r.TLS != nil {
		base.Scheme = "https"
	}
	dir := dirOf(r.URL.EscapedPath())
	if inPath, _ := caddyhttp.GetVar(r.Context(), tokenInPathVar).(bool); inPath {
		dir += PathTokenPrefix + id + "/"
	}
	out, rerr := manifest.Rewrite(kind, body, func(ref manifest.Ref) (string, bool) {
		return tokenizeRef(ref, base, dir, id, r.Host)
	})
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

var errManifestTooLarge = errors.New("manifest too large to rewrite")

func writeManifest(w http.ResponseWriter, status int, body []byte) error {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// tokenizeRef returns the form of a manifest URI that carries the stream's
// token, as a path relative to dir (the escaped directory the client
// resolves the manifest's URIs against), or false to keep it as written.
func tokenizeRef(ref manifest.Ref, base *url.URL, dir, id, host string) (string, bool) {
	u, err := url.Parse(ref.URI)
	if err != nil || strings.Contains(ref.URI, PathTokenPrefix) {
		return "", false
	}
	if !u.IsAbs() && u.Host == "" && !strings.HasPrefix(u.Path, "/") && ref.Base != "" {
		// Relative to a BaseURL in scope, which carries the token itself.
		return "", false
	}
	target, err := ref.Resolve(base)
	if err != nil || !manifest.SameHost(target, []string{host}) {
		return "", false
	}
	p := target.EscapedPath()
	i := strings.LastIndexByte(p, '/') + 1
	tokenized := p[:i] + PathTokenPrefix + id + "/" + p[i:]
	rel := relativePath(dir, tokenized)
	if target.RawQuery != "" {
		rel += "?" + target.RawQuery
	}
	if target.Fragment != "" {
		rel += "#" + target.EscapedFragment()
	}
	return rel, true
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

// markTokenInPath notes that r carries its stream id in its path.
func markTokenInPath(r *http.Request) {
	caddyhttp.SetVar(r.Context(), tokenInPathVar, true)
}
