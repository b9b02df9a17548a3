-- List: the live leases, oldest expiry first.
-- KEYS: leases, tombs
-- ARGV: none
-- Returns {{member, expires, member, expires, ...}, {lapsed members}}.
local leases, tombs = KEYS[1], KEYS[2]
local now = now_ms()
local lapsed, live = leases_of(leases, now)
prune(leases, tombs, now, lapsed)
return {live, lapsed}
