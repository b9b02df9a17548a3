package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/streamlimit/caddy-streamlimit/lease"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
}

// StoreModule is a lease store's config: a module in the namespace
// "stream_limit.stores".
type StoreModule interface {
	// Identity is equal for two configs exactly when they must share one
	// store, so that a reload with an unchanged store keeps its state.
	Identity() string
	// Open opens the store. It is called once per zone and identity;
	// onExpire hears of each lease found lapsed.
	Open(onExpire func(lease.Key, lease.Lease)) (lease.Store, error)
	// CallTimeout bounds each store call; 0 means calls never wait (no
	// I/O), so no deadline is set.
	CallTimeout() time.Duration
}

// MemoryStore keeps leases in this Caddy process: exact and fast, but not
// shared with other instances. It is the default store.
type MemoryStore struct{}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "stream_limit.stores.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// Identity implements StoreModule: every memory store of a zone is one.
func (MemoryStore) Identity() string { return "memory" }

// Open implements StoreModule.
func (MemoryStore) Open(onExpire func(lease.Key, lease.Lease)) (lease.Store, error) {
	return lease.NewMemoryStore(lease.MemoryOptions{Clock: now, OnExpire: onExpire}), nil
}

// CallTimeout implements StoreModule: a memory call takes a lock and does
// no I/O, so it needs no deadline (and costs no timer).
func (MemoryStore) CallTimeout() time.Duration { return 0 }

// UnmarshalCaddyfile sets up the memory store; it has no options:
//
//	store memory
func (*MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		return d.Errf("store memory: unrecognized option %q", d.Val())
	}
	return nil
}

// Interface guards.
var (
	_ StoreModule           = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
)
