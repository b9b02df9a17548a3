-- Release or revoke: free a live lease; a revoke also leaves a tombstone.
-- KEYS: leases, tombs
-- ARGV: id, tombstone ttl ms (0: a plain release), clock offset ms
-- Returns {found (1 or 0), {lapsed members}}.
local leases, tombs = KEYS[1], KEYS[2]
local id, tomb_ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[3])
local lapsed = prune(leases, tombs, now)

local member = find(leases, id)
if not member then
  return {0, lapsed}
end
redis.call('ZREM', leases, member)
if tomb_ttl > 0 then
  redis.call('ZADD', tombs, now + tomb_ttl, id)
  keep_until(tombs, now + tomb_ttl, now)
end
return {1, lapsed}
