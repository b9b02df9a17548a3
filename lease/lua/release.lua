-- Release or revoke: free a live lease; a revoke also leaves a tombstone.
-- KEYS: leases, tombs
-- ARGV: id, tombstone ttl ms (0: a plain release), most tombstones kept
-- Returns {found (1 or 0), {lapsed members}}.
local leases, tombs = KEYS[1], KEYS[2]
local id, tomb_ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local lapsed = lapsed_of(leases, now)

local member = find(live_of(leases, now), id)
if not member then
  prune(leases, tombs, now, lapsed)
  return {0, lapsed}
end
if tomb_ttl > 0 then
  -- The one write that grows memory comes first (see common.lua).
  redis.call('ZADD', tombs, now + tomb_ttl, id)
end
redis.call('ZREM', leases, member)
if tomb_ttl > 0 then
  trim_tombs(tombs, tonumber(ARGV[3]))
  keep_until(tombs, now + tomb_ttl, now)
end
prune(leases, tombs, now, lapsed)
return {1, lapsed}
