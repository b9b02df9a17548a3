package caddymodule

import (
	"context"
	"net/http"
	"time"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

// The id secret binds stream ids to their users (lease.NewID): one set in
// the config (Handler.Secret), or one the zone's store shares with every
// instance using it, cached here.

// sharedIDSecret returns the store's shared id secret, asking the store
// once.
func (z *zone) sharedIDSecret(ctx context.Context) ([]byte, error) {
	if s := z.idSecrets.Load(); s != nil {
		return (*s)[0], nil
	}
	z.idSecretMu.Lock()
	defer z.idSecretMu.Unlock()
	if s := z.idSecrets.Load(); s != nil {
		return (*s)[0], nil
	}
	s, err := z.store.SharedSecret(ctx, lease.NewSecret())
	if err != nil {
		return nil, err
	}
	z.idSecrets.Store(&[][]byte{s})
	return s, nil
}

// verifyID reports whether any id secret known here issued id to key.
func (z *zone) verifyID(key lease.Key, id string) bool {
	if s := z.idSecrets.Load(); s != nil {
		for _, secret := range *s {
			if lease.VerifyID(secret, key, id) {
				return true
			}
		}
	}
	return false
}

// refreshIDSecret reads the store's id secret again, at most once a
// second, proposing ours: a store that lost its data gets it back, and a
// secret another instance installed meanwhile is adopted (ids issued under
// ours stay valid here). It reports whether the known secrets changed.
func (z *zone) refreshIDSecret(ctx context.Context) (bool, error) {
	z.idSecretMu.Lock()
	defer z.idSecretMu.Unlock()
	if time.Since(z.idSecretRead) < time.Second {
		return false, nil
	}
	z.idSecretRead = time.Now()
	known := *z.idSecrets.Load()
	s, err := z.store.SharedSecret(ctx, known[0])
	if err != nil {
		return false, err
	}
	for _, k := range known {
		if string(k) == string(s) {
			return false, nil
		}
	}
	z.idSecrets.Store(&[][]byte{s, known[0]})
	return true, nil
}

// idSecretFor is the secret new stream ids are made with: the configured
// one, or the one the zone's store shares.
func (h *Handler) idSecretFor(r *http.Request) ([]byte, error) {
	if h.idSecret != nil {
		return h.idSecret, nil
	}
	if s := h.zone.idSecrets.Load(); s != nil {
		return (*s)[0], nil
	}
	ctx, cancel := h.storeContext(r)
	defer cancel()
	return h.zone.sharedIDSecret(ctx)
}

// verify reports whether id was issued to key. With a shared secret, an id
// that no secret known here accepts makes the zone read the store's secret
// again (at most once a second): after the store lost its data, instances
// that started since may have installed a new one.
func (h *Handler) verify(r *http.Request, key lease.Key, id string) (bool, error) {
	if h.idSecret != nil {
		return lease.VerifyID(h.idSecret, key, id), nil
	}
	if _, err := h.idSecretFor(r); err != nil {
		return false, err
	}
	if h.zone.verifyID(key, id) {
		return true, nil
	}
	ctx, cancel := h.storeContext(r)
	defer cancel()
	if refreshed, err := h.zone.refreshIDSecret(ctx); err != nil || !refreshed {
		return false, err
	}
	return h.zone.verifyID(key, id), nil
}
