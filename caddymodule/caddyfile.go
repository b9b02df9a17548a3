package caddymodule

import (
	"slices"
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
//		max_buffer     <duration>            # default 10m: most media a lease may cover beyond lease
//		zone           <name>                # default "default"
//		on_limit       deny | evict_oldest   # default deny
//		status         <code>                # default 429
//		on_store_error allow | deny          # default allow
//		sharing        strict | lenient | off  # default strict: players sharing one stream
//		dry_run
//		path_token                           # session mode: redirect starts to a tokenized URL
//		rewrite_hosts  <host>...             # more hosts whose URLs in manifests are this site's
//		client         <placeholder>         # who opens a title again; default address and User-Agent
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
	return parseBlock(d, h, handlerOptions, "", true)
}

// handlerOptions are the Caddyfile options of stream_limit: the one list
// of their names.
var handlerOptions = map[string]option[Handler]{
	"key":            textOption("", func(h *Handler) *string { return &h.Key }),
	"mode":           textOption("", func(h *Handler) *string { return &h.Mode }),
	"zone":           textOption("", func(h *Handler) *string { return &h.Zone }),
	"on_limit":       textOption("", func(h *Handler) *string { return &h.OnLimit }),
	"on_store_error": textOption("", func(h *Handler) *string { return &h.OnStoreError }),
	"sharing":        textOption("", func(h *Handler) *string { return &h.Sharing }),
	"secret":         textOption("", func(h *Handler) *string { return &h.Secret }),
	"list_path":      textOption("", func(h *Handler) *string { return &h.ListPath }),
	"limit":          textOption("", func(h *Handler) *string { return (*string)(&h.Limit) }),
	"lease":          durationOption("", func(h *Handler) *caddy.Duration { return &h.Lease }),
	"max_buffer":     durationOption("", func(h *Handler) *caddy.Duration { return &h.MaxBuffer }),
	"confirm_within": func(h *Handler, d *caddyfile.Dispenser) error {
		name := d.Val()
		v, err := oneValue(d, "")
		if err != nil || v == "off" {
			h.ConfirmWithin = -1
			return err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return d.Errf("%s: want a positive duration or off, got %q", name, v)
		}
		h.ConfirmWithin = caddy.Duration(dur)
		return nil
	},
	"status":        numberOption("", func(h *Handler) *int { return &h.Status }),
	"dry_run":       flagOption("", func(h *Handler) *bool { return &h.DryRun }),
	"path_token":    flagOption("", func(h *Handler) *bool { return &h.PathToken }),
	"log_user":      flagOption("", func(h *Handler) *bool { return &h.LogUser }),
	"rewrite_hosts": listOption("", func(h *Handler) *[]string { return &h.RewriteHosts }),
	"client":        textOption("", func(h *Handler) *string { return &h.Client }),
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
