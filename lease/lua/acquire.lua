-- Acquire: admit a stream, refresh it if it is live, or refuse it.
-- KEYS: leases, tombs, limit
-- ARGV: id, ttl ms, limit, policy (0 deny, 1 evict oldest), tombstone ttl ms,
--       most tombstones kept
-- Returns {status, limit, active, started, expires, retry ms, {evicted ids}, {lapsed members}}
-- where status is 1 admitted, 0 refused, -1 revoked. A refusal puts, in the
-- place of the evicted ids, the user's live leases that started first (16
-- at most), as {id, started, expires} flattened, earliest first.
local leases, tombs, limit_key = KEYS[1], KEYS[2], KEYS[3]
local id, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local lapsed, live = leases_of(leases, now)

if revoked(tombs, id, now) then
  prune(leases, tombs, now, lapsed)
  return {-1, 0, 0, 0, 0, 0, {}, lapsed}
end
local limit = tonumber(redis.call('GET', limit_key) or ARGV[3])

-- Re-acquiring a live stream refreshes it; it takes no new slot.
local member, expires = find(live, id)
if member then
  expires = math.max(expires, now + ttl)
  redis.call('ZADD', leases, expires, member)
  keep_until(leases, expires, now)
  prune(leases, tombs, now, lapsed)
  return {1, limit, #live / 2, started_of(member), expires, 0, {}, lapsed}
end

local active = #live / 2
local victims = {}
if active >= limit and ARGV[4] == '1' and limit > 0 then
  -- Evict the earliest started streams until one slot is free.
  local held = {}
  for i = 1, #live, 2 do
    held[#held + 1] = {member = live[i], started = started_of(live[i]), expires = tonumber(live[i + 1])}
  end
  table.sort(held, function(a, b)
    if a.started ~= b.started then return a.started < b.started end
    return a.expires < b.expires
  end)
  for i = 1, active - limit + 1 do
    victims[#victims + 1] = held[i].member
  end
end

if active - #victims >= limit then
  -- Refused: nothing is taken or extended.
  local retry = ttl
  if live[2] then
    retry = tonumber(live[2]) - now
  end
  local held = {}
  for i = 1, #live, 2 do
    held[#held + 1] = {started = started_of(live[i]), id = string.sub(live[i], 1, 16), expires = tonumber(live[i + 1])}
  end
  table.sort(held, function(a, b) return a.started < b.started end)
  local first = {}
  for i = 1, math.min(#held, 16) do
    first[#first + 1] = held[i].id
    first[#first + 1] = held[i].started
    first[#first + 1] = held[i].expires
  end
  prune(leases, tombs, now, lapsed)
  return {0, limit, active, 0, 0, retry, first, lapsed}
end

-- The writes that grow memory come first (see common.lua).
expires = now + ttl
redis.call('ZADD', leases, expires, id .. pack48(now))
local evicted = {}
if #victims > 0 then
  local until_ms = now + tonumber(ARGV[5])
  for i, victim in ipairs(victims) do
    evicted[i] = string.sub(victim, 1, 16)
    redis.call('ZADD', tombs, until_ms, evicted[i])
  end
  for _, victim in ipairs(victims) do
    redis.call('ZREM', leases, victim)
  end
  trim_tombs(tombs, tonumber(ARGV[6]))
  keep_until(tombs, until_ms, now)
end
keep_until(leases, expires, now)
prune(leases, tombs, now, lapsed)
return {1, limit, active - #victims + 1, now, expires, 0, evicted, lapsed}
