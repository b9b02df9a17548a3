package caddymodule

import (
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/streamlimit/caddy-streamlimit/manifest"
)

// A progressive file (an MP4 played by its URL) has no segments to count:
// a player may read all of it in one request and play for minutes after.
// Its own movie header says how long it plays; the bytes each response
// carries are that share of it, and carry the stream's lease as a
// segment's media does. The header is read as it passes (the start of the
// file, or the range a player asks for at its end); each process learns it
// once per stream.

// isProgressive reports whether a path names a file whose duration the
// limiter can read (MP4 and its kin).
func isProgressive(p string) bool {
	switch strings.ToLower(path.Ext(p)) {
	case ".mp4", ".m4v", ".m4a", ".mov":
		return true
	}
	return false
}

// progressiveWriter passes a progressive file's response on, counting its
// bytes and reading the file's duration from them.
type progressiveWriter struct {
	http.ResponseWriter
	known  bool // the stream knows the file's duration: read no header
	status int
	total  int64 // the file's size, from Content-Range or Content-Length
	bytes  int64
	header manifest.MP4Duration
}

func (w *progressiveWriter) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
		h := w.Header()
		if cr := h.Get("Content-Range"); code == http.StatusPartialContent && cr != "" {
			if i := strings.LastIndexByte(cr, '/'); i >= 0 {
				w.total, _ = strconv.ParseInt(cr[i+1:], 10, 64)
			}
		} else if code == http.StatusOK {
			w.total, _ = strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *progressiveWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	if !w.known {
		w.header.Write(b[:n])
	}
	return n, err
}

// Unwrap lets http.NewResponseController reach the writer underneath.
func (w *progressiveWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// media is how much of the file's playing time the response carried,
// given the duration known for the stream (0 if none yet), and the
// duration the response itself revealed.
func (w *progressiveWriter) media(known time.Duration) (carried, found time.Duration) {
	found, _ = w.header.Duration()
	d := known
	if found > 0 {
		d = found
	}
	if d <= 0 || w.total <= 0 || w.status < 200 || w.status >= 300 {
		return 0, found
	}
	return time.Duration(float64(d) * float64(min(w.bytes, w.total)) / float64(w.total)), found
}
