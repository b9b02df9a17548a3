package caddymodule

import (
	"sync/atomic"
	"time"
)

// clockOffset moves the handler's clock (and the memory store's, which
// this package gives it) in tests that drive expiry; it is always 0 in
// production, where nothing writes it.
var clockOffset atomic.Int64

func now() time.Time { return time.Now().Add(time.Duration(clockOffset.Load())) }
