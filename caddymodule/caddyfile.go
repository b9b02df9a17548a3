package caddymodule

import (
	"slices"
	"strconv"
	"strings"

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

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. It only
// parses: Validate checks the values, for the Caddyfile and JSON alike.
// Syntax:
//
//	stream_limit [<matcher>] {
//		key            <placeholder>         # default {http.request.header.X-User-Id}
//		limit          <n | placeholder>     # default 3
//		mode           connection | session  # default connection
//		lease          <duration>            # default 30s, at least 1s, at most 24h
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
		name := d.Val()
		set, ok := handlerOptions[name]
		if !ok {
			return d.Errf("stream_limit: unrecognized option %q", name)
		}
		if seen[name] {
			return d.Errf("stream_limit: option %s given twice", name)
		}
		seen[name] = true
		if err := set(h, d); err != nil {
			return err
		}
	}
	return nil
}

// handlerOptions are the Caddyfile options of stream_limit, each reading
// its arguments from the dispenser: the one list of their names.
var handlerOptions = map[string]func(h *Handler, d *caddyfile.Dispenser) error{
	"key":            textOption(func(h *Handler) *string { return &h.Key }),
	"mode":           textOption(func(h *Handler) *string { return &h.Mode }),
	"zone":           textOption(func(h *Handler) *string { return &h.Zone }),
	"on_limit":       textOption(func(h *Handler) *string { return &h.OnLimit }),
	"on_store_error": textOption(func(h *Handler) *string { return &h.OnStoreError }),
	"secret":         textOption(func(h *Handler) *string { return &h.Secret }),
	"list_path":      textOption(func(h *Handler) *string { return &h.ListPath }),
	"limit": func(h *Handler, d *caddyfile.Dispenser) error {
		v, err := oneValue(d)
		h.Limit = Limit(v)
		return err
	},
	"lease": func(h *Handler, d *caddyfile.Dispenser) error {
		v, err := oneValue(d)
		if err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return d.Errf("lease: %v", err)
		}
		if dur <= 0 {
			// In JSON 0 is the default: it cannot be written here either.
			return d.Errf("lease: %v would read as the default; want a positive duration", dur)
		}
		h.Lease = caddy.Duration(dur)
		return nil
	},
	"status": func(h *Handler, d *caddyfile.Dispenser) error {
		v, err := oneValue(d)
		if err != nil {
			return err
		}
		if h.Status, err = strconv.Atoi(v); err != nil {
			return d.Errf("status: %q is not a number", v)
		}
		return nil
	},
	"dry_run":    flagOption(func(h *Handler) *bool { return &h.DryRun }),
	"path_token": flagOption(func(h *Handler) *bool { return &h.PathToken }),
	"log_user":   flagOption(func(h *Handler) *bool { return &h.LogUser }),
	"store": func(h *Handler, d *caddyfile.Dispenser) error {
		if !d.NextArg() {
			return d.Errf("store: want a store name (%s)", strings.Join(storeNames(), " or "))
		}
		name := d.Val()
		unm, err := caddyfile.UnmarshalModule(d, "stream_limit.stores."+name)
		if err != nil {
			return d.Errf("store: %v (stores: %s)", err, strings.Join(storeNames(), ", "))
		}
		h.StoreRaw = caddyconfig.JSONModuleObject(unm, "type", name, nil)
		return nil
	},
}

// textOption is an option with one value, kept as written.
func textOption(field func(*Handler) *string) func(*Handler, *caddyfile.Dispenser) error {
	return func(h *Handler, d *caddyfile.Dispenser) error {
		v, err := oneValue(d)
		*field(h) = v
		return err
	}
}

// flagOption is an option that takes no value.
func flagOption(field func(*Handler) *bool) func(*Handler, *caddyfile.Dispenser) error {
	return func(h *Handler, d *caddyfile.Dispenser) error {
		name := d.Val()
		if d.NextArg() {
			return d.Errf("%s: takes no argument, got %q", name, d.Val())
		}
		*field(h) = true
		return nil
	}
}

// oneValue reads the single, non-empty value of the option d is on.
func oneValue(d *caddyfile.Dispenser) (string, error) {
	name := d.Val()
	var v string
	if !d.Args(&v) || v == "" {
		return "", d.Errf("%s: want one value", name)
	}
	if d.NextArg() {
		return "", d.Errf("%s: want one value, got another: %q", name, d.Val())
	}
	return v, nil
}

// storeNames lists the store modules registered, in or out of this
// repository.
func storeNames() []string {
	var names []string
	for _, m := range caddy.GetModules("stream_limit.stores") {
		names = append(names, m.ID.Name())
	}
	slices.Sort(names)
	return names
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)
