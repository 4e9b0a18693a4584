"""The Lua scripts behind ``RedisCounterStore``: one admission, one settlement, one lease renewal.

Each runs atomically inside Redis, so one call is one round trip and nothing can slip between
a check and its write. Every key a call touches carries its tenant's hash tag (``{tenant}``), so
on Redis Cluster a call lands on one node. Time is Redis's own (``TIME``, in milliseconds), so
replicas whose clocks disagree still count on one clock.

Three structures, all named by the request's lease id:

- a *window* (rate limits): a sorted set of lease ids scored by when they were admitted, and a
  hash of each lease's amount plus ``_sum``. Entries older than the window drop out (with their
  amount) whenever the window is read: a sliding log, so a limit of N per minute admits at most
  N in any 60 s, with no double burst at a fixed window's edge.
- *slots* (concurrency): a sorted set of lease ids scored by when their lease expires; expired
  ones drop out when read, so a replica that died frees its slots ``lease_s`` later.
- a *budget* (``b:<key>:<period>``): a hash with the period's settled ``spent``, each live
  reservation's amount and ``_sum``, and a sorted set of the reservations' lease expiries.

Every amount is an integer, so the sums are exact (``HINCRBY``): requests, tokens, and money in
micro-dollars (millionths of a US dollar). Numbers cross as strings; a script returns JSON
(``cjson``) for the Python side to read.
"""

from __future__ import annotations

_TRIM = """
local function trim(z, h, cutoff)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #gone == 0 then return tonumber(redis.call('HGET', h, '_sum') or '0') end
  local freed = 0
  for _, m in ipairs(gone) do
    freed = freed + (tonumber(redis.call('HGET', h, m)) or 0)
    redis.call('HDEL', h, m)
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
  return redis.call('HINCRBY', h, '_sum', -freed)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

ADMIT = _TRIM + """
-- KEYS: per budget (hash, leases), per slot (leases), per take (window, amounts).
-- ARGV: lease, lease_ms, refuse_share, #budgets, #slots, #takes, commit (0: only look),
--       per budget (limit, reserve, expire_at_ms), per slot (limit),
--       per take (amount, limit, window_ms).
local lease, lease_ms, refuse = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local nb, ns, nt = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local commit = ARGV[7] == '1'
local k, a = 1, 8
local shares, worst, worst_share = {}, -1, -1
for i = 1, nb do
  local limit = tonumber(ARGV[a])
  local held = trim(KEYS[k + 1], KEYS[k], now)
  local spent = tonumber(redis.call('HGET', KEYS[k], 'spent') or '0')
  local share = 1
  if limit > 0 then share = (spent + held) / limit end
  shares[i] = share
  if share > worst_share then worst, worst_share = i - 1, share end
  k, a = k + 2, a + 3
end
if nb > 0 and worst_share >= refuse then
  return cjson.encode({'budget', worst, shares, 0, {}})
end
for i = 1, ns do
  local z = KEYS[k + i - 1]
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  if redis.call('ZCARD', z) >= tonumber(ARGV[a + i - 1]) then
    return cjson.encode({'slot', i - 1, shares, 0, {}})
  end
end
local slots_k, slots_a = k, a
k, a = k + ns, a + ns
local takes_k, takes_a = k, a
local states, retry, failed = {}, 0, -1
for i = 1, nt do
  local z, h = KEYS[k], KEYS[k + 1]
  local amount, limit, window = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local free = limit - trim(z, h, now - window)
  local reset = 0
  if amount > free then
    local need, freed, wait = amount - free, 0, window
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', h, entries[j])) or 0)
      if freed >= need then wait = tonumber(entries[j + 1]) + window - now; break end
    end
    if #entries > 0 then reset = tonumber(entries[#entries]) + window - now end
    if wait > retry then retry = wait end
    if failed < 0 then failed = i - 1 end
  elseif not commit then
    local newest = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
    if #newest > 0 then reset = tonumber(newest[2]) + window - now end
  end
  states[i] = {limit, free, reset}
  k, a = k + 2, a + 3
end
if failed >= 0 then return cjson.encode({'take', failed, shares, retry, states}) end
if not commit then return cjson.encode({'ok', -1, shares, 0, states}) end
k, a = takes_k, takes_a
for i = 1, nt do
  local z, h = KEYS[k], KEYS[k + 1]
  local amount, window = tonumber(ARGV[a]), tonumber(ARGV[a + 2])
  redis.call('ZADD', z, now, lease)
  redis.call('HSET', h, lease, amount)
  redis.call('HINCRBY', h, '_sum', amount)
  redis.call('PEXPIRE', z, window + 1000)
  redis.call('PEXPIRE', h, window + 1000)
  states[i] = {states[i][1], states[i][2] - amount, window}
  k, a = k + 2, a + 3
end
for i = 1, ns do
  redis.call('ZADD', KEYS[slots_k + i - 1], now + lease_ms, lease)
  redis.call('PEXPIRE', KEYS[slots_k + i - 1], lease_ms * 2)
end
k, a = 1, 8
for i = 1, nb do
  local reserve = tonumber(ARGV[a + 1])
  if reserve > 0 then
    redis.call('ZADD', KEYS[k + 1], now + lease_ms, lease)
    redis.call('HSET', KEYS[k], lease, reserve)
    redis.call('HINCRBY', KEYS[k], '_sum', reserve)
    redis.call('PEXPIREAT', KEYS[k], ARGV[a + 2])
    redis.call('PEXPIREAT', KEYS[k + 1], ARGV[a + 2])
  end
  k, a = k + 2, a + 3
end
return cjson.encode({'ok', -1, shares, 0, states})
"""

SETTLE = """
-- KEYS: per spend key (hash), per reservation (hash, leases), per slot (leases),
--       per take (window, amounts).
-- ARGV: lease, cost, #spend, #reserved, #slots, #takes, per spend (expire_at_ms),
--       per take (refund: reserved - used).
local lease, cost = ARGV[1], tonumber(ARGV[2])
local nsp, nr, ns, nt = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local k, a = 1, 7
for i = 1, nsp do
  if cost > 0 then
    redis.call('HINCRBY', KEYS[k], 'spent', cost)
    redis.call('PEXPIREAT', KEYS[k], ARGV[a])
  end
  k, a = k + 1, a + 1
end
for i = 1, nr do
  local held = redis.call('HGET', KEYS[k], lease)
  if held then
    redis.call('HDEL', KEYS[k], lease)
    redis.call('ZREM', KEYS[k + 1], lease)
    redis.call('HINCRBY', KEYS[k], '_sum', -tonumber(held))
  end
  k = k + 2
end
for i = 1, ns do
  redis.call('ZREM', KEYS[k], lease)
  k = k + 1
end
for i = 1, nt do
  local old = redis.call('HGET', KEYS[k + 1], lease)
  if old then
    local new = math.max(0, tonumber(old) - tonumber(ARGV[a]))
    redis.call('HSET', KEYS[k + 1], lease, new)
    redis.call('HINCRBY', KEYS[k + 1], '_sum', new - tonumber(old))
  end
  k, a = k + 2, a + 1
end
return 1
"""

RENEW = """
-- KEYS: the sorted sets holding the lease (slots, reservations). ARGV: lease, lease_ms.
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', expires, ARGV[1]) end
return #KEYS
"""

ADD_SPEND = """
-- KEYS: budget hashes. ARGV: amount, expire_at_ms per key.
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'spent', ARGV[1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[i + 1])
end
return #KEYS
"""
