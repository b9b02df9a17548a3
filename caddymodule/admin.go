package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin is the admin API of stream_limit, on Caddy's admin endpoint:
//
//	GET    /stream_limit/zones/{zone}                          totals
//	GET    /stream_limit/zones/{zone}/users/{user}             the user's live streams
//	DELETE /stream_limit/zones/{zone}/users/{user}/streams/{id} kick a stream
//	PUT    /stream_limit/zones/{zone}/users/{user}/limit       set a per-user limit: {"limit": N}
//	DELETE /stream_limit/zones/{zone}/users/{user}/limit       remove it
//
// {zone} and {user} are path-escaped ("a%2Fb" is the user "a/b").
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.stream_limit",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes implements caddy.AdminRouter.
func (a *Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/stream_limit/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func (a *Admin) serve(w http.ResponseWriter, r *http.Request) error {
	var segs []string
	for _, s := range strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/stream_limit/"), "/") {
		u, err := url.PathUnescape(s)
		if err != nil {
			return apiError(http.StatusBadRequest, "bad path escape in %q", s)
		}
		segs = append(segs, u)
	}
	if len(segs) < 2 || segs[0] != "zones" {
		return apiError(http.StatusNotFound, "no such resource; see /stream_limit/zones/{zone}")
	}
	z, err := findZone(segs[1])
	if err != nil {
		return err
	}
	if len(segs) == 2 {
		return a.zoneTotals(w, r, z)
	}
	if len(segs) < 4 || segs[2] != "users" || segs[3] == "" {
		return apiError(http.StatusNotFound, "no such resource; see /stream_limit/zones/{zone}/users/{user}")
	}
	key := lease.Key{Zone: z.name, User: segs[3]}
	if len(key.User) > lease.MaxUserLen {
		return apiError(http.StatusBadRequest, "user longer than %d bytes", lease.MaxUserLen)
	}
	switch {
	case len(segs) == 4:
		return a.user(w, r, z, key)
	case len(segs) == 6 && segs[4] == "streams":
		return a.kick(w, r, z, key, segs[5])
	case len(segs) == 5 && segs[4] == "limit":
		return a.limit(w, r, z, key)
	}
	return apiError(http.StatusNotFound, "no such resource")
}

// findZone returns the zone of that name in this process, if any handler
// uses it; handlers that give one zone name different stores make it
// ambiguous.
func findZone(name string) (*zone, error) {
	var found []*zone
	zones.Range(func(k, v any) bool {
		if k.(zoneKey).name == name {
			found = append(found, v.(*zone))
		}
		return true
	})
	switch len(found) {
	case 0:
		return nil, apiError(http.StatusNotFound, "unknown zone %q (no stream_limit handler uses it)", name)
	case 1:
		return found[0], nil
	}
	return nil, apiError(http.StatusConflict, "zone %q is used with %d different stores; give each its own zone name", name, len(found))
}

func onlyMethod(r *http.Request, methods ...string) error {
	for _, m := range methods {
		if r.Method == m {
			return nil
		}
	}
	return apiError(http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, strings.Join(methods, " or "))
}

func (a *Admin) zoneTotals(w http.ResponseWriter, r *http.Request, z *zone) error {
	if err := onlyMethod(r, http.MethodGet); err != nil {
		return err
	}
	t, err := z.store.Totals(r.Context(), z.name)
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "store: %v", err)
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"zone":     z.name,
		"users":    t.Users,
		"streams":  t.Streams,
		"admitted": z.admittedCount.Load(),
		"denied":   z.deniedCount.Load(),
	})
}

func (a *Admin) user(w http.ResponseWriter, r *http.Request, z *zone, key lease.Key) error {
	if err := onlyMethod(r, http.MethodGet); err != nil {
		return err
	}
	leases, err := z.store.List(r.Context(), key)
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "store: %v", err)
	}
	limit, ok, err := z.store.Override(r.Context(), key)
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "store: %v", err)
	}
	if !ok {
		limit = int(z.limit.Load())
	}
	return writeJSON(w, http.StatusOK, streamList(limit, leases))
}

func (a *Admin) kick(w http.ResponseWriter, r *http.Request, z *zone, key lease.Key, id string) error {
	if err := onlyMethod(r, http.MethodDelete); err != nil {
		return err
	}
	id, err := parseStreamID(id)
	if err != nil {
		return apiError(http.StatusBadRequest, "malformed stream id")
	}
	ttl := time.Duration(z.lease.Load())
	err = z.store.Revoke(r.Context(), key, id, lease.TombstoneTTL(ttl))
	switch {
	case errors.Is(err, lease.ErrNotFound):
		return apiError(http.StatusNotFound, "no live stream %s for this user", id)
	case err != nil:
		return apiError(http.StatusServiceUnavailable, "store: %v", err)
	}
	ref := streamRef{key, id}
	// Cut it here at once; other instances cut it at its next renewal.
	z.markRevoked(ref, ttl)
	z.recordEnded(ref, causeKick)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *Admin) limit(w http.ResponseWriter, r *http.Request, z *zone, key lease.Key) error {
	if err := onlyMethod(r, http.MethodPut, http.MethodDelete); err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		ok, err := z.store.ClearOverride(r.Context(), key)
		if err != nil {
			return apiError(http.StatusServiceUnavailable, "store: %v", err)
		}
		if !ok {
			return apiError(http.StatusNotFound, "no limit override for this user")
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	var body struct {
		Limit *int `json:"limit"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Limit == nil || *body.Limit < 0 {
		return apiError(http.StatusBadRequest, `body must be {"limit": N} with N a whole number >= 0`)
	}
	if err := z.store.SetOverride(r.Context(), key, *body.Limit); err != nil {
		return apiError(http.StatusServiceUnavailable, "store: %v", err)
	}
	return writeJSON(w, http.StatusOK, map[string]int{"limit": *body.Limit})
}

var _ caddy.AdminRouter = (*Admin)(nil)
