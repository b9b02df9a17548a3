-- Shared by every script; the store prepends it to each one.
--
-- One (zone, user) owns three keys, all with one {hash tag}:
--   leases: sorted set; member = stream id (16 bytes) .. start time in ms
--           (6 bytes, big-endian); score = expiry in ms.
--   tombs:  sorted set; member = revoked stream id; score = when the
--           tombstone lapses, in ms.
--   limit:  string; the per-user limit override, when one is set.
-- Time is Redis's own (TIME), never a proxy's clock. The offset argument
-- is 0 in production; tests use it to move time forward.

local function now_ms(offset)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(offset)
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

-- Drops lapsed leases and tombstones; returns the lapsed leases' members.
local function prune(leases, tombs, now)
  local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
  redis.call('ZREMRANGEBYSCORE', tombs, '-inf', now)
  return lapsed
end

-- A user holds a handful of leases: a scan beats a second index.
local function find(leases, id)
  local all = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 16) == id then
      return all[i], tonumber(all[i + 1])
    end
  end
  return nil, nil
end

-- Lets a key vanish by itself once nothing in it can be live: abandoned
-- users cost nothing.
local function keep_until(key, until_ms, now)
  local want = until_ms - now + 1
  if redis.call('PTTL', key) < want then
    redis.call('PEXPIRE', key, want)
  end
end
