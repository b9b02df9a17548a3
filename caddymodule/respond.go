package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

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

// streamID returns the stream id a request carries, in the Stream-Id header
// or the stream_id query parameter, or "" if it carries none. Ids are
// canonical UUIDs; anything else is refused rather than guessed at.
func streamID(r *http.Request) (string, error) {
	id := r.Header.Get(StreamIDHeader)
	if id == "" && strings.Contains(r.URL.RawQuery, StreamIDQuery) {
		id = r.URL.Query().Get(StreamIDQuery)
	}
	if id == "" {
		return "", nil
	}
	return parseStreamID(id)
}

func parseStreamID(s string) (string, error) {
	if len(s) != 36 {
		return "", errBadStreamID
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", errBadStreamID
	}
	return u.String(), nil
}
