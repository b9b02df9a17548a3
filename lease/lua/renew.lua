-- Renew: extend a live lease; never create one.
-- KEYS: leases, tombs
-- ARGV: id, ttl ms
-- Returns {status, started, expires, {lapsed members}}: status 1 renewed,
-- 0 not found (lapsed or released), -1 revoked.
local leases, tombs = KEYS[1], KEYS[2]
local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local lapsed, live = leases_of(leases, now)

local status, member, expires = 1, nil, nil
if revoked(tombs, id, now) then
  status = -1
else
  member, expires = find(live, id)
  if not member then
    status = 0
  end
end
if status ~= 1 then
  prune(leases, tombs, now, lapsed)
  return {status, 0, 0, lapsed}
end
-- The one write that grows memory comes first (see common.lua).
expires = math.max(expires, now + ttl)
redis.call('ZADD', leases, 'XX', expires, member)
keep_until(leases, expires, now)
prune(leases, tombs, now, lapsed)
return {1, started_of(member), expires, lapsed}
