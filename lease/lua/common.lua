-- Shared by every script; the store prepends it to each one.
--
-- One (zone, user) owns three keys, all with one {hash tag}:
--   leases: sorted set; member = stream id (16 bytes) .. start time in ms
--           (6 bytes, big-endian); score = expiry in ms.
--   tombs:  sorted set; member = revoked stream id; score = when the
--           tombstone lapses, in ms. At most a fixed number per user: the
--           ones that lapse first are trimmed.
--   limit:  string; the per-user limit override, when one is set.
-- Time is Redis's own (TIME), never a proxy's clock: every proxy sharing
-- the Redis sees a lease lapse at the same moment.
--
-- Order of writes: every script reads and decides first, then makes the
-- writes that may grow memory (ZADD, SET), and only then the ones that
-- free it (ZREM, ZREMRANGEBY*, PEXPIRE). Under maxmemory with noeviction,
-- Redis refuses a growing write only while the script has written nothing
-- yet; a freeing write first would let every later one through. In this
-- order the first growing write fails and the script fails whole, with
-- nothing written.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- 6 bytes hold milliseconds until the year 10889.
local function pack48(n)
  local s = ''
  for shift = 5, 0, -1 do
    s = s .. string.char(math.floor(n / 2 ^ (8 * shift)) % 256)
  end
  return s
end

local function started_of(member)
  local n = 0
  for i = 17, 22 do
    n = n * 256 + string.byte(member, i)
  end
  return n
end

-- The user's leases, read once (a user holds a handful): the members that
-- lapsed and are still stored, and the live ones as {member, expires,
-- member, expires, ...}, earliest to lapse first (read only).
local function leases_of(leases, now)
  local all = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
  local lapsed, live = {}, {}
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= now then
      lapsed[#lapsed + 1] = all[i]
    else
      live[#live + 1] = all[i]
      live[#live + 1] = all[i + 1]
    end
  end
  return lapsed, live
end

-- Whether id has a tombstone that has not lapsed (read only).
local function revoked(tombs, id, now)
  local until_ms = redis.call('ZSCORE', tombs, id)
  return until_ms and tonumber(until_ms) > now
end

-- A user holds a handful of leases: a scan beats a second index.
local function find(live, id)
  for i = 1, #live, 2 do
    if string.sub(live[i], 1, 16) == id then
      return live[i], tonumber(live[i + 1])
    end
  end
  return nil, nil
end

-- Drops lapsed leases and tombstones: frees memory, so it runs last.
local function prune(leases, tombs, now, lapsed)
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
  redis.call('ZREMRANGEBYSCORE', tombs, '-inf', now)
end

-- Keeps the tombstones that lapse last, at most cap of them.
local function trim_tombs(tombs, cap)
  redis.call('ZREMRANGEBYRANK', tombs, 0, -(cap + 1))
end

-- Lets a key vanish by itself once nothing in it can be live: abandoned
-- users cost nothing.
local function keep_until(key, until_ms, now)
  local want = until_ms - now + 1
  if redis.call('PTTL', key) < want then
    redis.call('PEXPIRE', key, want)
  end
end
