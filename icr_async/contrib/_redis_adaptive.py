"""The adaptive fleet rate of ``RedisBackoffStore``: Lua scripts that learn, for a scope that
has been rate limited, how fast the whole fleet may send to it.

ICR documents no limit and no rate-limit headers; a 429's ``Retry-After`` is all it says.
Pausing the fleet on the first 429 (the pub/sub pause) still lets through what is already in
flight, or sent in the milliseconds before the pause reaches every worker: two or more 429s
per back-off period. So a scope that has had a 429 becomes *limited*, and while it is, its
requests go through one admission script (one Redis round trip) that spaces them evenly at
a fleet rate it learns (the idea of the AWS SDKs' "adaptive" retry mode, shared by the fleet):

* **Start.** The first 429 of a scope creates its state with a start rate
  (``START_RATE``). Requests are spaced (GCRA, burst 1), so when the server says no, at most
  a request or two are in flight; the pause itself is checked inside the same script, so
  no admission slips through once it is in Redis.
* **Learn.** The first 429 under admission control reads what the fleet got through: ``n``
  requests sent since the pause ended, ``t`` ms from then to this 429, and the server's
  ``Retry-After`` ``w``: the server took ``n - 1`` requests in ``t + w``, so the rate becomes
  ``(n - 1) / (t + w)`` (never above the rate in force, never under one request per ``w``).
* **Probe.** Each stretch of ``step`` ms (twice the first ``Retry-After``, at least 2 s:
  a whole server window at the new rate) in which the fleet took 90% of its slots without
  a 429 confirms the rate (``good``) and raises it by ``inc`` (15% of the learned rate at
  first, doubling after each stretch that held, at most a quarter of the rate): a lifted
  limit is found again. A rate the fleet does not use is never raised.
* **Back off.** A 429 just after a raise means the probe went too far: back to ``good``,
  a quarter of the increment, and twice the stretch before the next probe (probes grow
  rare where the limit stands). A 429 at a rate that had held means the limit fell (or
  others share it): the rate drops by a quarter and the probing starts over.
* **Forget.** The state lives ``hold`` ms after the last 429 or the last request it held
  back; then the scope goes back to the hot path that never asks Redis.

Times are on Redis's clock (``TIME``), never compared between machines; tests pass a time
in (``now`` ≥ 0) to run the same scripts on a manual clock. A pause key holds its end time
on that clock (and a ``PX`` for Redis to drop it); a key written by an older worker (value
``1``) is read by its ``PTTL``.
"""

from __future__ import annotations

__all__ = ["ADMIT", "MAX_STEP_MS", "PAUSE", "PEEK", "START_RATE"]

START_RATE = 100.0
"""Requests per second a newly limited scope starts at: spaced 10 ms apart, so the next 429
finds at most a request or two in flight; doubled each stretch the fleet uses without a
429 (a server whose limit is higher is found in a few stretches)."""

MAX_STEP_MS = 32_000
"""The longest stretch between two probes (each failed probe doubles it)."""

_PRELUDE = """
local function clock(arg)
  local now = tonumber(arg)
  if now and now >= 0 then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function left(key, now)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local e = tonumber(v)
  if e == nil or e < 100000000000 then
    return redis.call('PTTL', key)
  end
  return e - now
end
local function num(x, default)
  local v = tonumber(x)
  if v == nil then return default end
  return v
end
"""

# KEYS: pause key, [state key]. ARGV: want ms, channel, message prefix, now (-1: TIME), hold
# ms, start rate, base step ms, max step ms. Returns the pause in force, ms. The state is
# adapted only by the first 429 of a back-off period (no pause in force): the others were
# in flight and say nothing new.
PAUSE = (
    _PRELUDE
    + """
local now = clock(ARGV[4])
local want = tonumber(ARGV[1])
local l = left(KEYS[1], now)
if l >= want then
  return l
end
redis.call('SET', KEYS[1], math.floor(now + want), 'PX', want)
redis.call('PUBLISH', ARGV[2], ARGV[3] .. want)
if #KEYS < 2 or l > 0 then
  return want
end
local hold = tonumber(ARGV[5])
local base = math.max(tonumber(ARGV[7]), 2 * want)
local floor = 1000 / want
local s = redis.call('HMGET', KEYS[2], 'r', 'good', 'inc', 'step', 'since', 'n', 'tat', 'exp',
  'learn')
local r = tonumber(s[1])
local good, inc, step, learn = 0, 0, base, 1
if r and num(s[8], 0) > now then
  good = num(s[2], 0)
  inc = num(s[3], 0)
  step = num(s[4], base)
  learn = num(s[9], 0)
  if learn == 1 then
    local interval = 1000 / r
    local ahead = math.max(0, num(s[7], now) - now)
    -- tat is the next free slot: reserved slots still ahead of now were not sent yet.
    local sent = num(s[6], 0) - math.max(0, math.ceil(ahead / interval) - 1)
    local took = math.max(1, now - num(s[5], now) + want)
    r = math.max(math.min((sent - 1) * 1000 / took, r), floor)
    good, inc, learn = 0, r * 0.15, 0
  elseif good > 0 and r > good then
    r = good
    inc = math.max(inc / 4, good * 0.01)
    step = math.min(step * 2, tonumber(ARGV[8]))
  else
    r = math.max(r * 0.75, floor)
    good, inc, step = 0, r * 0.15, base
  end
else
  r = tonumber(ARGV[6])
end
local resume = math.floor(now + want)
redis.call('HSET', KEYS[2], 'r', tostring(r), 'good', tostring(good), 'inc', tostring(inc),
  'step', step, 'since', resume, 'n', 0, 'tat', resume, 'busy', 0,
  'exp', math.floor(now + hold), 'learn', learn)
redis.call('PEXPIRE', KEYS[2], hold + want)
return want
"""
)

# KEYS: app pause, scope pause, state. ARGV: now (-1: TIME), hold ms.
# Returns {0, delay ms, state ms left}: a slot is taken (send after the delay);
# {1, ms, 0}: paused; {3, 0, 0}: the scope is not limited (any more).
ADMIT = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local p = math.max(left(KEYS[1], now), left(KEYS[2], now))
if p > 0 then
  return {1, p, 0}
end
local s = redis.call('HMGET', KEYS[3], 'r', 'good', 'inc', 'step', 'since', 'n', 'tat', 'exp',
  'learn', 'busy')
local r = tonumber(s[1])
local exp = num(s[8], 0)
if not r or exp <= now then
  redis.call('DEL', KEYS[3])
  return {3, 0, 0}
end
local good, inc, step, since = num(s[2], 0), num(s[3], 0), num(s[4], 1000), num(s[5], now)
local n, tat, learn, busy = num(s[6], 0), num(s[7], now), num(s[9], 0), num(s[10], 0)
if now - since >= step then
  -- A stretch without a 429. Raise the rate only if the fleet used it (took 90% of its
  -- slots): a rate the fleet cannot reach says nothing about the server.
  if n >= 0.9 * r * (now - since) / 1000 then
    if learn == 1 then
      r = r * 2
    else
      good = r
      r = r + inc
      inc = math.min(inc * 2, r * 0.25)
    end
  end
  since, n, busy = now, 0, 0
end
if tat < now then tat = now end
local delay = tat - now
tat = tat + 1000 / r
n = n + 1
if delay > 0 then
  busy = 1
  exp = now + tonumber(ARGV[2])
end
redis.call('HSET', KEYS[3], 'r', tostring(r), 'good', tostring(good), 'inc', tostring(inc),
  'since', since, 'n', n, 'tat', tostring(tat), 'busy', busy, 'exp', math.floor(exp))
redis.call('PEXPIRE', KEYS[3], math.max(1, math.floor(exp - now)) + 60000)
return {0, math.ceil(delay), math.floor(exp - now)}
"""
)

# KEYS: app pause, app state. ARGV: now (-1: TIME). Returns {pause ms left, state ms left}:
# what a worker reads once per app before its first request.
PEEK = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local exp = tonumber(redis.call('HGET', KEYS[2], 'exp') or '0') or 0
return {math.max(0, left(KEYS[1], now)), math.max(0, math.floor(exp - now))}
"""
)
