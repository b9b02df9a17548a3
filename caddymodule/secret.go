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

// anySecret reports whether ok holds for any id secret known here.
func (z *zone) anySecret(ok func(secret []byte) bool) bool {
	if s := z.idSecrets.Load(); s != nil {
		for _, secret := range *s {
			if ok(secret) {
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

// verify reports whether id was issued to key.
func (h *Handler) verify(r *http.Request, key lease.Key, id string) (bool, error) {
	return h.withSecrets(r, func(secret []byte) bool { return lease.VerifyID(secret, key, id) })
}

// withSecrets reports whether ok holds for the configured id secret, or
// for one the zone's store shares. With a shared secret, one that no
// secret known here satisfies makes the zone read the store's secret again
// (at most once a second): after the store lost its data, instances that
// started since may have installed a new one.
func (h *Handler) withSecrets(r *http.Request, ok func(secret []byte) bool) (bool, error) {
	if h.idSecret != nil {
		return ok(h.idSecret), nil
	}
	if _, err := h.idSecretFor(r); err != nil {
		return false, err
	}
	if h.zone.anySecret(ok) {
		return true, nil
	}
	ctx, cancel := h.storeContext(r)
	defer cancel()
	if refreshed, err := h.zone.refreshIDSecret(ctx); err != nil || !refreshed {
		return false, err
	}
	return h.zone.anySecret(ok), nil
}
