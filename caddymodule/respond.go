package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
	"stream_shared":         "shared",
	"stream_replaced":       "replaced",
	"bad_limit":             "bad_limit",
	"store_unavailable":     "store_error",
}

// errorBody is the JSON body of every refusal.
type errorBody struct {
	Error  string `json:"error"`
	Limit  *int   `json:"limit,omitempty"`
	Active *int   `json:"active,omitempty"`
	// Screens are, at the limit, the user's own streams that hold the
	// slots, earliest first: when each started and, where this instance
	// admitted it, what kind of client plays it ("Chrome on Android").
	Screens []screenBody `json:"screens,omitempty"`
}

// screenBody is one of the streams a refusal at the limit names.
type screenBody struct {
	Started string `json:"started"`
	Client  string `json:"client,omitempty"`
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
	h.zone.recordDenied(repl.ReplaceAll(h.Key, ""), reason, data)
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
