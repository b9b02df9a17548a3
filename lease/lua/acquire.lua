-- Acquire: admit a stream, refresh it if it is live, or refuse it.
-- KEYS: leases, tombs, limit
-- ARGV: id, ttl ms, limit, policy (0 deny, 1 evict oldest), tombstone ttl ms, clock offset ms
-- Returns {status, limit, active, started, expires, retry ms, {evicted ids}, {lapsed members}}
-- where status is 1 admitted, 0 refused, -1 revoked.
local leases, tombs, limit_key = KEYS[1], KEYS[2], KEYS[3]
local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[6])
local lapsed = prune(leases, tombs, now)

if redis.call('ZSCORE', tombs, id) then
  return {-1, 0, 0, 0, 0, 0, {}, lapsed}
end
local limit = tonumber(redis.call('GET', limit_key) or ARGV[3])

-- Re-acquiring a live stream refreshes it; it takes no new slot.
local member, expires = find(leases, id)
if member then
  expires = math.max(expires, now + ttl)
  redis.call('ZADD', leases, expires, member)
  keep_until(leases, expires, now)
  return {1, limit, redis.call('ZCARD', leases), started_of(member), expires, 0, {}, lapsed}
end

local active = redis.call('ZCARD', leases)
local evicted = {}
if active >= limit and ARGV[4] == '1' and limit > 0 then
  -- Evict the earliest started streams until one slot is free.
  local all = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
  local held = {}
  for i = 1, #all, 2 do
    held[#held + 1] = {member = all[i], started = started_of(all[i]), expires = tonumber(all[i + 1])}
  end
  table.sort(held, function(a, b)
    if a.started ~= b.started then return a.started < b.started end
    return a.expires < b.expires
  end)
  local until_ms = now + tonumber(ARGV[5])
  for i = 1, active - limit + 1 do
    local victim = string.sub(held[i].member, 1, 16)
    redis.call('ZREM', leases, held[i].member)
    redis.call('ZADD', tombs, until_ms, victim)
    evicted[#evicted + 1] = victim
  end
  keep_until(tombs, until_ms, now)
  active = limit - 1
end

if active >= limit then
  -- Refused: nothing is taken or extended.
  local retry = ttl
  local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
  if first[2] then
    retry = tonumber(first[2]) - now
  end
  return {0, limit, active, 0, 0, retry, {}, lapsed}
end

expires = now + ttl
redis.call('ZADD', leases, expires, id .. pack48(now))
keep_until(leases, expires, now)
return {1, limit, active + 1, now, expires, 0, evicted, lapsed}
