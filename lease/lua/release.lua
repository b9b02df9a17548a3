-- Release or revoke: free a live lease; a revoke also leaves a tombstone.
-- KEYS: leases, tombs
-- ARGV: id, tombstone ttl ms (0: a plain release), most tombstones kept
-- Returns {found (1 or 0), {lapsed members}}.
local leases, tombs = KEYS[1], KEYS[2]
local id, tomb_ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()

-- A plain release, the call of every stream's end, is kept to the fewest
-- calls: one read of the leases, one write, and the tombstones left alone
-- (they are bounded by trim_tombs and keep_until, and pruned by every
-- other script).
local all = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
local lapsed, member = {}, nil
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then
    lapsed[#lapsed + 1] = all[i]
  elseif string.sub(all[i], 1, 16) == id then
    member = all[i]
  end
end
if not member then
  if tomb_ttl > 0 then
    prune(leases, tombs, now, lapsed)
  elseif #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
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
  prune(leases, tombs, now, lapsed)
elseif #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
end
return {1, lapsed}
