#!lua name=fabric
-- The Redis Functions of fabric-worker: one library, loaded by an administrative step
-- (`fabric setup`, or a worker whose Redis user may load functions), called with FCALL.
-- Agents get FCALL only: no EVAL, no FUNCTION LOAD.
--
-- Every function declares all its keys (one cluster slot each call) and does bounded work:
-- it never unpacks a list of unbounded size, and compares stream ids as strings of digits,
-- never as Lua numbers (which are doubles and lose precision above 2^53).

-- Bumped whenever a function changes; a worker refuses an older library.
local VERSION = 6

-- Most fields an entry may have to be re-added by a function (a retry, a forward).
local MAX_FIELDS = 64

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "<ms>-<seq>" as two 20-digit, zero-padded strings (so that string order is number
-- order), or nil for anything else.
local function split_id(id)
  if type(id) ~= 'string' then return nil end
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms or #ms > 20 or #seq > 20 then return nil end
  return string.rep('0', 20 - #ms) .. ms, string.rep('0', 20 - #seq) .. seq
end

local function id_less(a_ms, a_seq, b_ms, b_seq)
  if a_ms ~= b_ms then return a_ms < b_ms end
  return a_seq < b_seq
end

local U64_MAX = '18446744073709551615'
-- Sorts after every 20-digit id part: "after the last possible id".
local PAST_END = '99999999999999999999'

-- A 20-digit decimal string plus one (nil past 2^64 - 1).
local function incr(s)
  if s == U64_MAX then return nil end
  local digits = {}
  for i = 1, #s do digits[i] = string.byte(s, i) - 48 end
  local i = #digits
  while i >= 1 do
    if digits[i] == 9 then
      digits[i] = 0
      i = i - 1
    else
      digits[i] = digits[i] + 1
      break
    end
  end
  local out = {}
  for j = 1, #digits do out[j] = string.char(digits[j] + 48) end
  return table.concat(out)
end

local function strip(s)
  local t = string.gsub(s, '^0+', '')
  if t == '' then return '0' end
  return t
end

-- The id right after <ms>-<seq> (nil after the very last possible id).
local function next_id(ms, seq)
  local s = incr(seq)
  if s then return ms, s end
  local m = incr(ms)
  if not m then return nil end
  return m, string.rep('0', 20)
end

local function as_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- fabric_version(): the library's version.
redis.register_function{
  function_name = 'fabric_version',
  callback = function() return VERSION end,
  flags = {'no-writes'},
}

-- fabric_lease(stream; group, consumer, id...): keeps the lease of in-flight entries by
-- resetting their idle time (XCLAIM ... JUSTID does not bump the delivery counter), but only
-- for entries this consumer still owns. Returns the ids now owned by another consumer
-- (entries no longer pending were acknowledged meanwhile and are not reported).
redis.register_function('fabric_lease', function(keys, args)
  local lost = {}
  local last = math.min(#args, 2 + 1000)
  for i = 3, last do
    local p = redis.call('XPENDING', keys[1], args[1], args[i], args[i], 1)
    if p[1] then
      if p[1][2] == args[2] then
        redis.call('XCLAIM', keys[1], args[1], args[2], 0, args[i], 'JUSTID')
      else
        lost[#lost + 1] = args[i]
      end
    end
  end
  return lost
end)

-- One reclaim step on `key`: claims up to `count` entries idle longer than min_idle_ms from
-- any consumer of the group, from `cursor`, with each one's delivery count (XAUTOCLAIM does
-- not return it): {next_cursor, claimed_entries, deleted_ids, delivery_counts}.
local function reclaim_step(key, group, consumer, min_idle_ms, cursor, count)
  local r = redis.call('XAUTOCLAIM', key, group, consumer, min_idle_ms, cursor, 'COUNT', count)
  local counts = {}
  for i, e in ipairs(r[2]) do
    local p = redis.call('XPENDING', key, group, e[1], e[1], 1)
    if p[1] then counts[i] = p[1][4] else counts[i] = 0 end
  end
  return {r[1], r[2], r[3] or {}, counts}
end

-- fabric_reclaim(stream; group, consumer, min_idle_ms, start_id, count): one reclaim step.
-- Returns {next_cursor, claimed_entries, deleted_ids, delivery_counts}.
redis.register_function('fabric_reclaim', function(keys, args)
  local count = math.min(tonumber(args[5]) or 100, 1000)
  return reclaim_step(keys[1], args[1], args[2], args[3], args[4], count)
end)

-- fabric_reclaim_many(S1, ..., Sn; group, consumer, min_idle_ms, count, cursor_1, ...,
-- cursor_n): one reclaim step on each of an inbox and its lanes (keys of one slot, at most
-- 8), each from its own cursor, claiming at most `count` entries in all. One call per agent
-- where an idle worker made one per stream.
-- Returns per stream its step's {next_cursor, claimed_entries, deleted_ids,
-- delivery_counts}, or {} for a stream not reached (every entry allowed was claimed before
-- it: its cursor stays where it was).
redis.register_function('fabric_reclaim_many', function(keys, args)
  if #keys > 8 then
    return redis.error_reply('ERR fabric_reclaim_many takes at most 8 streams')
  end
  local left = math.min(tonumber(args[4]) or 100, 1000)
  local out = {}
  for i, key in ipairs(keys) do
    if left < 1 then
      out[i] = {}
    else
      out[i] = reclaim_step(key, args[1], args[2], args[3], args[4 + i] or '0-0', left)
      left = left - #out[i][2]
    end
  end
  return out
end)

-- fabric_schedule_retry(stream, retries; group, stream_id, delay_ms, member): parks a failed
-- entry for a later attempt and acknowledges the current one, atomically. The member is JSON
-- {"fields": [...], "from": <id>} built by the worker; the due time uses the server clock.
redis.register_function('fabric_schedule_retry', function(keys, args)
  redis.call('ZADD', keys[2], now_ms() + tonumber(args[3]), args[4])
  return redis.call('XACK', keys[1], args[1], args[2])
end)

-- fabric_promote(stream, retries, dead[, delayed, urgent, high, low]; limit): moves
-- members whose time has come from the retries (and, when given, the delayed messages) back
-- into the stream — or into the priority lane a member names ({"lane": "urgent"|"high"|"low"}),
-- when that lane key is given and exists. A member that cannot be moved (malformed, too many
-- fields, refused by Redis) goes to the dead letters with reason `promote_failed` instead of
-- blocking the others. At most `limit` members per set per call (O(log N) each).
-- Returns {moved, ms_until_next_due or -1, failed}.
local LANES = {urgent = 5, high = 6, low = 7}

local function promote_set(keys, set, now, limit)
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit)
  local moved, failed = 0, 0
  for _, m in ipairs(due) do
    local ok, v = pcall(cjson.decode, m)
    local fields = ok and type(v) == 'table' and v['fields']
    local why
    if type(fields) ~= 'table' or #fields < 2 or #fields % 2 == 1 then
      why = 'not a scheduled member'
    elseif #fields > 2 * MAX_FIELDS then
      why = 'more than ' .. MAX_FIELDS .. ' fields'
    else
      local target = keys[1]
      local lane = LANES[v['lane']]
      if lane and keys[lane] and redis.call('EXISTS', keys[lane]) == 1 then target = keys[lane] end
      local added, err = pcall(redis.call, 'XADD', target, '*', unpack(fields))
      if added then
        moved = moved + 1
      else
        why = tostring(err)
      end
    end
    if why then
      failed = failed + 1
      redis.call('XADD', keys[3], '*', 'retry_member', string.sub(m, 1, 65536),
        'dead_reason', 'promote_failed', 'dead_error', why,
        'dead_stream', keys[1], 'dead_at_ms', tostring(now))
    end
    redis.call('ZREM', set, m)
  end
  local wait = -1
  local nxt = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if nxt[2] then
    wait = tonumber(nxt[2]) - now
    if wait < 0 then wait = 0 end
  end
  return moved, wait, failed
end

redis.register_function('fabric_promote', function(keys, args)
  local now = now_ms()
  local limit = math.min(tonumber(args[1]) or 100, 1000)
  local moved, wait, failed = promote_set(keys, keys[2], now, limit)
  if keys[4] then
    local m2, w2, f2 = promote_set(keys, keys[4], now, limit)
    moved, failed = moved + m2, failed + f2
    if w2 >= 0 and (wait < 0 or w2 < wait) then wait = w2 end
  end
  return {moved, wait, failed}
end)

-- fabric_trim(stream[, more streams of its slot: an inbox and its lanes, at most 8];
-- [keep_from_ms]): trims entries that every consumer group has been delivered and
-- acknowledged. Never removes an entry some group has not been delivered yet, nor a pending
-- one, nor (when given) one written at or after keep_from_ms; a stream without groups is
-- never trimmed. Returns the number of entries removed (from all the streams given).
local function trim_one(s, keep_ms, keep_seq)
  if redis.call('EXISTS', s) == 0 then return 0 end
  local groups = redis.call('XINFO', 'GROUPS', s)
  if #groups == 0 or #groups > 1000 then return 0 end
  local best_ms, best_seq
  for _, g in ipairs(groups) do
    local info = as_map(g)
    local ms, seq
    if tonumber(info['pending']) > 0 then
      local p = redis.call('XPENDING', s, info['name'])
      ms, seq = split_id(p[2])
    else
      ms, seq = split_id(info['last-delivered-id'])
      if ms then
        ms, seq = next_id(ms, seq)
        -- Past the last possible id: everything was delivered (PAST_END sorts after any id).
        if not ms then ms, seq = PAST_END, PAST_END end
      end
    end
    -- An id this code cannot read: trim nothing rather than guess.
    if not ms then return 0 end
    if best_ms == nil or id_less(ms, seq, best_ms, best_seq) then
      best_ms, best_seq = ms, seq
    end
  end
  if keep_ms and id_less(keep_ms, keep_seq, best_ms, best_seq) then
    best_ms, best_seq = keep_ms, keep_seq
  end
  if best_ms == PAST_END then return redis.call('XTRIM', s, 'MAXLEN', 0) end
  return redis.call('XTRIM', s, 'MINID', strip(best_ms) .. '-' .. strip(best_seq))
end

redis.register_function('fabric_trim', function(keys, args)
  if #keys > 8 then return redis.error_reply('ERR fabric_trim takes at most 8 streams') end
  local keep_ms, keep_seq
  if args[1] then
    keep_ms, keep_seq = split_id(tostring(args[1]) .. '-0')
    if not keep_ms then return redis.error_reply('ERR fabric_trim: keep_from_ms must be digits') end
  end
  local removed = 0
  for _, s in ipairs(keys) do removed = removed + trim_one(s, keep_ms, keep_seq) end
  return removed
end)

-- fabric_forward(target, seen; require_exists, window_ms, sender, count, then per entry:
-- member, pairs, field, value, ...): the router's delivery step for up to 100 entries of
-- one sender bound for one target, in the target's slot. Each entry is appended to
-- `target`, with the field `sender` = `sender` first, unless its `member` (sender/message
-- id) was forwarded there within the window (a router that died between forwarding and
-- acknowledging, or a sender that wrote the message twice); with require_exists = 1, only
-- if the target stream exists (an inbox of a known agent). Returns, per entry, {1, id}
-- when appended, {0, ''} for a duplicate, {-1, ''} for a target that does not exist,
-- {-2, error} when Redis refused the append (nothing is remembered then).
--
-- fabric_deliver(inbox, seen, urgent, high, low, delayed; require_exists, window_ms, sender,
-- count, then per entry: member, lane, due_ms, pairs, field, value, ...): the router's
-- delivery into an inbox (secure mode), as fabric_forward, and besides: an entry with a
-- lane ('urgent', 'high', 'low'; '' for none) goes to that lane when it exists, and one
-- with due_ms in the future goes to the inbox's schedule `delayed` (member
-- {"fields": [sender, <sender>, ...], "lane": <lane>}) instead. Returns per entry {1, id}
-- when appended, {2, ''} when scheduled, {0, ''} for a duplicate, {-1, ''} for a missing
-- inbox, {-2, error} when Redis refused the append.
--
-- What both do: `with_lanes` says whether each entry has a lane and a due time after its
-- member (fabric_deliver) or not (fabric_forward).
local function deliver(name, keys, args, with_lanes)
  local target, seen = keys[1], keys[2]
  local lanes, delayed = {}, nil
  if with_lanes then
    lanes, delayed = {urgent = keys[3], high = keys[4], low = keys[5]}, keys[6]
    if not delayed then return redis.error_reply('ERR ' .. name .. ': expected 6 keys') end
  end
  local must_exist, window, sender, count = args[1] == '1', tonumber(args[2]), args[3], tonumber(args[4])
  if not window or not sender or not count or count < 1 or count > 100 then
    return redis.error_reply('ERR ' .. name .. ': expected 1 to 100 entries')
  end
  local head = with_lanes and 3 or 1
  local exists = (not must_exist) or redis.call('EXISTS', target) == 1
  local out, i, now = {}, 5, now_ms()
  for n = 1, count do
    local member, pairs = args[i], tonumber(args[i + head])
    local lane, due = '', 0
    if with_lanes then lane, due = args[i + 1], tonumber(args[i + 2]) end
    if not member or not lane or not due or not pairs or pairs < 1 or pairs >= MAX_FIELDS
        or i + head + 2 * pairs > #args then
      return redis.error_reply('ERR ' .. name .. ': malformed entry ' .. n)
    end
    local first, last = i + head + 1, i + head + 2 * pairs
    if not exists then
      out[n] = {-1, ''}
    elseif redis.call('ZADD', seen, 'NX', now, member) == 0 then
      out[n] = {0, ''}
    elseif due > now then
      local flat = {'sender', sender}
      for j = first, last do flat[#flat + 1] = args[j] end
      local m = {fields = flat}
      if lanes[lane] then m['lane'] = lane end
      redis.call('ZADD', delayed, due, cjson.encode(m))
      out[n] = {2, ''}
    else
      local dest = target
      if lanes[lane] and redis.call('EXISTS', lanes[lane]) == 1 then dest = lanes[lane] end
      local id = redis.pcall('XADD', dest, '*', 'sender', sender, unpack(args, first, last))
      if type(id) == 'table' and id.err then
        redis.call('ZREM', seen, member)
        out[n] = {-2, id.err}
      else
        out[n] = {1, id}
      end
    end
    i = last + 1
  end
  -- Forget members older than the window, a bounded number per call.
  local old = redis.call('ZRANGEBYSCORE', seen, '-inf', now - window, 'LIMIT', 0, 100)
  if #old > 0 then redis.call('ZREM', seen, unpack(old)) end
  return out
end

redis.register_function('fabric_forward', function(keys, args)
  return deliver('fabric_forward', keys, args, false)
end)

redis.register_function('fabric_deliver', function(keys, args)
  return deliver('fabric_deliver', keys, args, true)
end)

-- fabric_send_lane(lane, stream; field, value, ...): appends the entry (1 to 64 field pairs)
-- to the priority lane `lane` of the inbox `stream` when that lane exists (the agent's
-- workers create their lanes), else to `stream` itself, so a recipient that reads no lanes
-- (a Python consumer) still gets it. Returns {key appended to, stream id}.
redis.register_function('fabric_send_lane', function(keys, args)
  local pairs = #args / 2
  if pairs < 1 or pairs ~= math.floor(pairs) or pairs > MAX_FIELDS then
    return redis.error_reply('ERR fabric_send_lane: expected 1 to 64 field pairs')
  end
  local target = keys[2]
  if redis.call('EXISTS', keys[1]) == 1 then target = keys[1] end
  return {target, redis.call('XADD', target, '*', unpack(args))}
end)

-- fabric_send_once(stream, once, ids[, lane]; key, window_ms, message_id, timestamp, field, value,
-- ...): an idempotent send. Appends the entry (1 to 64 field pairs) to `stream` unless
-- `key` was sent there within the window; `once` (a sorted set: key -> expiry ms) and `ids`
-- (a hash: key -> "<stream id> <message id> <timestamp>") are in the stream's slot; with
-- `lane` (a priority lane of the inbox, §5.9), the entry goes there when it exists. Returns
-- {1, stream id} when appended, {0, "<stream id> <message id> <timestamp>"} of the first
-- send for a duplicate.
redis.register_function('fabric_send_once', function(keys, args)
  local stream, once, ids = keys[1], keys[2], keys[3]
  local key, window, msg_id, ts = args[1], tonumber(args[2]), args[3], args[4]
  local pairs = (#args - 4) / 2
  if not key or not window or window < 1 or not msg_id or not ts
      or pairs < 1 or pairs ~= math.floor(pairs) or pairs > MAX_FIELDS then
    return redis.error_reply('ERR fabric_send_once: expected key, window ms, message id, timestamp and 1 to 64 field pairs')
  end
  local now = now_ms()
  -- Forget keys whose window is over, a bounded number per call.
  local old = redis.call('ZRANGEBYSCORE', once, '-inf', now, 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', once, unpack(old))
    redis.call('HDEL', ids, unpack(old))
  end
  local until_ms = redis.call('ZSCORE', once, key)
  if until_ms and tonumber(until_ms) > now then
    local first = redis.call('HGET', ids, key)
    if first then return {0, first} end
  end
  local target = stream
  if keys[4] and redis.call('EXISTS', keys[4]) == 1 then target = keys[4] end
  local id = redis.call('XADD', target, '*', unpack(args, 5))
  redis.call('ZADD', once, now + window, key)
  redis.call('HSET', ids, key, id .. ' ' .. msg_id .. ' ' .. ts)
  return {1, id}
end)

-- fabric_rate_limit(key; count, period_ms, burst, horizon_ms): takes one turn from the rate
-- limit kept at `key` — at most `count` turns per `period_ms`, `burst` of them at once —
-- with the generic cell rate algorithm (GCRA: ITU-T I.371 / ATM Forum TM 4.0, the
-- "virtual scheduling" form; as in redis-cell and the governor crate). The key holds the
-- theoretical arrival time (TAT), in microseconds of the server's clock (TIME), so the
-- clocks of the callers do not matter. With emission interval T = period / count and
-- tolerance tau = burst * T, a turn asked at `now` is due at max(TAT, now) + T - tau.
-- When that is at most `horizon_ms` ahead (0: only now), the turn is taken (reserved for
-- that time: TAT moves on by T) and the caller must not start before it; else nothing
-- changes. horizon_ms is capped at one hour, and a stored TAT further ahead than any
-- reservation could have put it (a damaged key) is read as that far.
-- With a sixth argument `reserved_ms` (the due time of a turn taken before, which the
-- caller parked until then), the turn is that one when it is not late by more than
-- max(tau, 25 ms): {0, 1, reserved_ms}, nothing changes; a turn missed by more (its
-- caller came back late) is not run late, which would bunch starts, and a new one is taken.
-- Returns {wait_ms, taken (1|0), due_at_ms (server clock)}; taken with wait_ms 0 = go now.
local MAX_RATE_HORIZON_MS = 3600000

redis.register_function('fabric_rate_limit', function(keys, args)
  local count, period, burst, horizon =
    tonumber(args[1]), tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  if not keys[1] or not count or not period or not burst or not horizon
      or count < 1 or period < 1 or burst < 1 or horizon < 0
      or count > 1000000 or period > 86400000 or burst > 1000000 then
    return redis.error_reply('ERR fabric_rate_limit: expected count (1-1000000), period_ms (1-86400000), burst (1-1000000), horizon_ms (>= 0)')
  end
  if horizon > MAX_RATE_HORIZON_MS then horizon = MAX_RATE_HORIZON_MS end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local emission = period * 1000 / count
  local tau = burst * emission
  local reserved = tonumber(args[5])
  if reserved and now - reserved * 1000 <= math.max(tau, 25000) then return {0, 1, reserved} end
  local tat = tonumber(redis.call('GET', keys[1]) or '')
  if not tat or tat < now then tat = now end
  local cap = now + MAX_RATE_HORIZON_MS * 1000 + tau
  if tat > cap then tat = cap end
  local new_tat = tat + emission
  local wait_us = new_tat - tau - now
  if wait_us < 0 then wait_us = 0 end
  local wait = math.ceil(wait_us / 1000)
  local due = math.floor(now / 1000) + wait
  if wait > horizon then return {wait, 0, due} end
  new_tat = math.ceil(new_tat)
  redis.call('SET', keys[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
  return {wait, 1, due}
end)

-- fabric_workflow_step(workflow; step, part, outcome, value): records what one part of one
-- step of a workflow (the hash `fabric:workflow:{<id>}`, docs/protocol.md §13) came to —
-- outcome 'ok' with `value` the reply payload (JSON), or 'failed' with `value` the failure
-- (JSON) — and says what the caller must do next. Recording the same part again (a
-- redelivered step) changes nothing and answers the same, so the caller may run it again
-- after a crash. Returns:
--   {'missing'}                          no such workflow (expired, or never started)
--   {'wait'}                             other parts of this step are still running
--   {'next', step, input, definition}    send the parts of `step`, each with `input` (JSON)
--   {'finish', status, value, reply_to, from_agent, parts}
--                                        the workflow is over: write the final reply
--                                        (`value` is the result, or the first failure and
--                                        `parts` each part's outcome), then HDEL `reply`
--   {'done'}                             nothing left to do
-- Bounded: O(parts of the step) (at most 1000, checked when the workflow starts).
local function wf_part(wf, kind, s, p)
  return redis.call('HGET', wf, kind .. ':' .. s .. ':' .. p)
end

-- The input of the step after `s`: the one part's reply, or {"results": [...]} in part order.
local function wf_step_input(wf, s, n)
  if n == 1 then return wf_part(wf, 'result', s, 0) or '{}' end
  local out = {}
  for p = 0, n - 1 do out[#out + 1] = wf_part(wf, 'result', s, p) or 'null' end
  return '{"results":[' .. table.concat(out, ',') .. ']}'
end

-- Each part's outcome, in part order.
local function wf_step_parts(wf, s, n)
  local out = {}
  for p = 0, n - 1 do
    local r = wf_part(wf, 'result', s, p)
    if r then
      out[#out + 1] = '{"status":"succeeded","result":' .. r .. '}'
    else
      out[#out + 1] = wf_part(wf, 'error', s, p) or '{"status":"running"}'
    end
  end
  return '[' .. table.concat(out, ',') .. ']'
end

redis.register_function('fabric_workflow_step', function(keys, args)
  local wf = keys[1]
  local s, p, outcome, value = tonumber(args[1]), tonumber(args[2]), args[3], args[4]
  if not s or not p or (outcome ~= 'ok' and outcome ~= 'failed') or not value then
    return redis.error_reply('ERR fabric_workflow_step: expected step, part, ok or failed, and a JSON value')
  end
  if redis.call('EXISTS', wf) == 0 then return {'missing'} end
  local n = tonumber(redis.call('HGET', wf, 'parts:' .. s))
  local current = tonumber(redis.call('HGET', wf, 'step'))
  if not n or not current or p < 0 or p >= n or s > current then
    return redis.error_reply('ERR fabric_workflow_step: step ' .. s .. ' part ' .. p .. ' has not started in ' .. wf)
  end
  local status = redis.call('HGET', wf, 'status')
  if status == 'running' and s == current and not wf_part(wf, 'result', s, p)
      and not wf_part(wf, 'error', s, p) then
    if outcome == 'ok' then
      redis.call('HSET', wf, 'result:' .. s .. ':' .. p, value)
    else
      redis.call('HSET', wf, 'error:' .. s .. ':' .. p, value)
      redis.call('HINCRBY', wf, 'failed:' .. s, 1)
      redis.call('HSETNX', wf, 'error', value)
    end
    if redis.call('HINCRBY', wf, 'left:' .. s, -1) <= 0 then
      local steps = tonumber(redis.call('HGET', wf, 'steps')) or 0
      local finished = true
      if tonumber(redis.call('HGET', wf, 'failed:' .. s) or '0') > 0 then
        redis.call('HSET', wf, 'status', 'failed', 'parts', wf_step_parts(wf, s, n))
      elseif s >= steps - 1 then
        redis.call('HSET', wf, 'status', 'succeeded', 'result', wf_step_input(wf, s, n))
      else
        redis.call('HSET', wf, 'step', s + 1)
        finished = false
      end
      if finished then
        redis.call('HSET', wf, 'finished_ms', now_ms(), 'final_step', s)
        if (redis.call('HGET', wf, 'reply_to') or '') ~= '' then
          redis.call('HSET', wf, 'reply', 'pending')
        end
      end
    end
    local keep = tonumber(redis.call('HGET', wf, 'keep_ms'))
    if keep and keep > 0 then redis.call('PEXPIRE', wf, keep) end
  end
  -- What to do now: the same answer for a part recorded before.
  if tonumber(redis.call('HGET', wf, 'left:' .. s) or '0') > 0 then return {'wait'} end
  status = redis.call('HGET', wf, 'status')
  if status == 'running' then
    if tonumber(redis.call('HGET', wf, 'step')) == s + 1 then
      return {'next', s + 1, wf_step_input(wf, s, n), redis.call('HGET', wf, 'definition')}
    end
    return {'done'}
  end
  if tonumber(redis.call('HGET', wf, 'final_step')) ~= s
      or redis.call('HGET', wf, 'reply') ~= 'pending' then
    return {'done'}
  end
  local reply_to = redis.call('HGET', wf, 'reply_to') or ''
  local from = redis.call('HGET', wf, 'from_agent') or ''
  if status == 'succeeded' then
    return {'finish', status, redis.call('HGET', wf, 'result') or '{}', reply_to, from, '[]'}
  end
  return {'finish', status, redis.call('HGET', wf, 'error') or '{}', reply_to, from,
    redis.call('HGET', wf, 'parts') or '[]'}
end)
