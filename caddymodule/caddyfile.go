package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("stream_limit", parseCaddyfile)
	// After request_header so that identity set by basic_auth, forward_auth
	// or request_header is visible; before encode, handle, route, respond and
	// reverse_proxy so that it guards them with no global order option.
	httpcaddyfile.RegisterDirectiveOrder("stream_limit", httpcaddyfile.After, "request_header")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var sl Handler
	err := sl.UnmarshalCaddyfile(h.Dispenser)
	return &sl, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	stream_limit [<matcher>] {
//		key            <placeholder>         # default {http.request.header.X-User-Id}
//		limit          <n | placeholder>     # default 3
//		mode           connection | session  # default connection
//		lease          <duration>            # default 30s, at least 1s
//		zone           <name>                # default "default"
//		on_limit       deny | evict_oldest   # default deny
//		status         <code>                # default 429
//		on_store_error allow | deny          # default allow
//		dry_run
//		path_token                           # session mode: redirect starts to a tokenized URL
//		log_user                             # put the user in log entries (personal data)
//		secret         <secret>              # default: one shared through the store
//		list_path      <path>                # default off
//		store          <name> [{ ... }]      # default memory
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("stream_limit: option %s given twice", opt)
		}
		seen[opt] = true
		switch opt {
		case "dry_run", "path_token", "log_user":
			if d.NextArg() {
				return d.Errf("%s: takes no argument, got %q", opt, d.Val())
			}
			switch opt {
			case "dry_run":
				h.DryRun = true
			case "path_token":
				h.PathToken = true
			case "log_user":
				h.LogUser = true
			}
		case "store":
			if !d.NextArg() {
				return d.Errf("store: want a store name (memory or redis)")
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "stream_limit.stores."+name)
			if err != nil {
				return d.Errf("store: %v", err)
			}
			h.StoreRaw = caddyconfig.JSONModuleObject(unm, "type", name, nil)
		case "key", "limit", "mode", "lease", "zone", "on_limit", "status", "on_store_error", "list_path", "secret":
			var val string
			if !d.Args(&val) {
				return d.Errf("%s: want one value", opt)
			}
			if d.NextArg() {
				return d.Errf("%s: want one value, got another: %q", opt, d.Val())
			}
			if err := h.setOption(d, opt, val); err != nil {
				return err
			}
		default:
			return d.Errf("stream_limit: unrecognized option %q", opt)
		}
	}
	return nil
}

func (h *Handler) setOption(d *caddyfile.Dispenser, opt, val string) error {
	switch opt {
	case "key":
		h.Key = val
	case "limit":
		h.Limit = Limit(val)
		if err := h.Limit.validate(); err != nil {
			return d.Errf("%v", err)
		}
	case "mode":
		if val != ModeConnection && val != ModeSession {
			return d.Errf("mode: %q is neither %s nor %s", val, ModeConnection, ModeSession)
		}
		h.Mode = val
	case "lease":
		dur, err := caddy.ParseDuration(val)
		if err != nil {
			return d.Errf("lease: %v", err)
		}
		if dur < MinLease {
			return d.Errf("lease: %v is shorter than the minimum %v", dur, MinLease)
		}
		h.Lease = caddy.Duration(dur)
	case "zone":
		h.Zone = val
	case "secret":
		h.Secret = val
	case "on_limit":
		if val != OnLimitDeny && val != OnLimitEvictOldest {
			return d.Errf("on_limit: %q is neither %s nor %s", val, OnLimitDeny, OnLimitEvictOldest)
		}
		h.OnLimit = val
	case "status":
		code, err := strconv.Atoi(val)
		if err != nil || code < 400 || code > 599 {
			return d.Errf("status: %q is not an HTTP error status (400-599)", val)
		}
		h.Status = code
	case "on_store_error":
		if val != OnStoreErrorAllow && val != OnStoreErrorDeny {
			return d.Errf("on_store_error: %q is neither %s nor %s", val, OnStoreErrorAllow, OnStoreErrorDeny)
		}
		h.OnStoreError = val
	case "list_path":
		if val == "" || val[0] != '/' {
			return d.Errf("list_path: %q must start with /", val)
		}
		h.ListPath = val
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)
