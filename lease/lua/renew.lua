-- Renew: extend a live lease; never create one.
-- KEYS: leases, tombs
-- ARGV: id, ttl ms, clock offset ms
-- Returns {status, started, expires, {lapsed members}}: status 1 renewed,
-- 0 not found (lapsed or released), -1 revoked.
local leases, tombs = KEYS[1], KEYS[2]
local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local lapsed = prune(leases, tombs, now)

if redis.call('ZSCORE', tombs, id) then
  return {-1, 0, 0, lapsed}
end
local member, expires = find(leases, id)
if not member then
  return {0, 0, 0, lapsed}
end
expires = math.max(expires, now + ttl)
redis.call('ZADD', leases, 'XX', expires, member)
keep_until(leases, expires, now)
return {1, started_of(member), expires, lapsed}
