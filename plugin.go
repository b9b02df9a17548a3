// Package streamlimit registers the stream_limit Caddy module: import it
// (or build with xcaddy --with github.com/streamlimit/caddy-streamlimit) to
// get per-user concurrent stream limits in front of a video origin.
package streamlimit

import (
	_ "github.com/streamlimit/caddy-streamlimit/caddymodule"
)
