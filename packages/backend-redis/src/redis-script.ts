import { createHash } from 'node:crypto';
import type { RawPair } from '@kv/core';
import { copyBytes } from './byte-slabs.js';

/**
 * The one Lua script behind every write (and the reads that must be atomic).
 * Each call runs whole on the server, so a compare-and-swap, its index update,
 * its version and its change message can never interleave with another write.
 *
 * KEYS[1] the index (a sorted set, every member scored 0, so ZRANGEBYLEX walks it in key order)
 * KEYS[2] the sequence counter (INCR; seeded from the server's TIME when missing): versions, fencing
 *         tokens and change numbers
 * KEYS[3] the deadlines: a sorted set of every key with a ttl, scored by when it expires (server
 *         time, ms), so the `expire` operation can make Redis expire due keys on time
 * ARGV[1] the operation, ARGV[2] the key-name prefix (`{kv}:`), ARGV[3] the change channel,
 * ARGV[4] the largest value sent inline in a change message; then the operation's arguments.
 *
 * Change messages (PUBLISH on the channel, in commit order, one sequence number each):
 *   p<seq>:<keylen>:<key><value>   put (the new version is <seq>)
 *   P<seq>:<keylen>:<key>          put of a value too large to send inline
 *   d<seq>:<keylen>:<key>          delete (also: an expired or evicted key left the index)
 *   t<seq>:<keylen>:<dir>          deleteTree: <dir> and everything below it
 *   u0:<keylen>:<key>              a lock whose key was already deleted was freed (no sequence
 *                                  number: not a change of the data, only a wake-up for lock waiters)
 */
export const SCRIPT = `
local idx, seqk, expk = KEYS[1], KEYS[2], KEYS[3]
local op, ns, chan, inline = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local function dk(k) return ns .. 'd:' .. k end
-- A key's data is one string: '<version>:<owner>:' then the value bytes (owner: the store that
-- keeps a keepAlive key alive, else empty). One string, not a hash, so a listing is one MGET.
-- The version and owner of a key (nil when it has no data), from the first bytes only.
local function header(k)
  local h = redis.call('GETRANGE', dk(k), 0, 63)
  return string.match(h, '^(%d+):([^:]*):')
end
local function lk(k) return ns .. 'l:' .. k end
-- The counter never goes back, even when the server lost it (a restart without persistence, an
-- eviction, a FLUSHALL): a missing counter starts at the server's time in microseconds. That
-- exceeds every number handed out before, as long as fewer than one number per microsecond was
-- drawn since the first seed (a script takes longer than that) and the server clock did not go back,
-- and it stays below 2^53 (exact in a JS number) until the year 2255.
local function seed()
  if redis.call('EXISTS', seqk) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', seqk, t[1] .. string.format('%06d', tonumber(t[2])))
  end
end
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function deadline(k, ttl)
  redis.call('ZADD', expk, nowms() + tonumber(ttl), k)
end
local function nextseq()
  local n = redis.call('INCR', seqk)
  -- 1: the counter was missing (a seeded counter is never that small)
  if n == 1 then
    redis.call('DEL', seqk)
    seed()
    n = redis.call('INCR', seqk)
  end
  return n
end
local function emit(t, seq, k, payload)
  redis.call('PUBLISH', chan, t .. string.format('%d:%d:', seq, #k) .. k .. (payload or ''))
end

-- True when k has data. Else its index entry, if any, is one whose data is gone (expired or
-- evicted): it leaves the index, and watchers hear a delete.
local function sweep(k)
  if redis.call('EXISTS', dk(k)) == 1 then return true end
  redis.call('ZREM', expk, k)
  if redis.call('ZREM', idx, k) == 1 then emit('d', nextseq(), k) end
  return false
end

-- existed: the caller saw k's data in this script already.
local function write(k, v, ttl, owner, existed)
  -- A key with data is always in the index: every step that adds data adds its entry, and an entry
  -- leaves only with its data (or after it, by sweep).
  if not existed then existed = sweep(k) end
  local seq = nextseq()
  local data = string.format('%d:', seq) .. owner .. ':' .. v
  if ttl > 0 then
    redis.call('SET', dk(k), data, 'PX', ttl)
    deadline(k, ttl)
  else
    -- A deadline left from an earlier write with a ttl stays in the deadline set until it is due:
    -- the expire operation then finds the key without a ttl and drops the entry.
    redis.call('SET', dk(k), data)
  end
  if not existed then redis.call('ZADD', idx, 0, k) end
  if #v <= inline then emit('p', seq, k, v) else emit('P', seq, k) end
  return seq
end

-- Removes a key's data. Never its lock key: a lock belongs to its holder, and only unlock, the
-- lock's ttl or a renewal that finds its data gone frees it (so a delete cannot make two holders).
local function remove(k)
  redis.call('ZREM', expk, k)
  local existed = redis.call('DEL', dk(k)) == 1
  local indexed = redis.call('ZREM', idx, k) == 1
  if existed or indexed then emit('d', nextseq(), k) end
  return existed or indexed
end

-- Reads seed a missing counter too, so the first change after a read follows it without a gap.
local function counter()
  seed()
  return tonumber(redis.call('GET', seqk))
end

if op == 'put' then
  -- key value ttl owner
  return write(ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8])
elseif op == 'cas' then
  -- key value ttl owner previous ('' = create only). -1 exists, -2 not found, -3 modified.
  local cur = header(ARGV[5])
  local prev = ARGV[9]
  if prev == '' then
    if cur then return -1 end
  elseif not cur then return -2
  elseif cur ~= prev then return -3 end
  return write(ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], cur ~= nil)
elseif op == 'del' then
  remove(ARGV[5])
  return 1
elseif op == 'cad' then
  -- key previous
  local cur = header(ARGV[5])
  if not cur then return -2 elseif cur ~= ARGV[6] then return -3 end
  remove(ARGV[5])
  return 1
elseif op == 'deltree' then
  -- dir: removes dir and everything below it
  local dir = ARGV[5]
  local lo, hi = '[' .. dir .. '/', '(' .. dir .. '0'
  local any = false
  redis.call('ZREM', expk, dir)
  if redis.call('DEL', dk(dir)) == 1 then any = true end
  if redis.call('ZREM', idx, dir) == 1 then any = true end
  local keys = redis.call('ZRANGEBYLEX', idx, lo, hi)
  for _, k in ipairs(keys) do
    redis.call('DEL', dk(k))
    redis.call('ZREM', expk, k)
  end
  if #keys > 0 then
    redis.call('ZREMRANGEBYLEX', idx, lo, hi)
    any = true
  end
  if any then emit('t', nextseq(), dir) end
  return #keys
elseif op == 'get' then
  -- key -> { counter, data }
  return { counter(), redis.call('GET', dk(ARGV[5])) }
elseif op == 'list' then
  -- dir ('' = all) -> { counter, key, data, key, data, ... }. The exact listing in one step, for
  -- when the client's chunked reads (redis-store.ts) keep meeting concurrent writes.
  local dir = ARGV[5]
  local keys
  if dir == '' then
    keys = redis.call('ZRANGEBYLEX', idx, '-', '+')
  else
    keys = redis.call('ZRANGEBYLEX', idx, '[' .. dir .. '/', '(' .. dir .. '0')
  end
  local out = { 0 }
  for i = 1, #keys, 1000 do
    local names = {}
    for j = i, math.min(#keys, i + 999) do names[#names + 1] = dk(keys[j]) end
    local data = redis.call('MGET', unpack(names))
    for j = 1, #data do
      local k = keys[i + j - 1]
      if data[j] then
        out[#out + 1] = k
        out[#out + 1] = data[j]
      else
        sweep(k)
      end
    end
  end
  out[1] = counter()
  return out
elseif op == 'sweep' then
  -- keys: drops those whose data is gone from the index
  for i = 5, #ARGV do sweep(ARGV[i]) end
  return 1
elseif op == 'expire' then
  -- limit -> { keys handled, ms until the next deadline (-1: none) }. Touches each key past its
  -- deadline: the access makes Redis expire it now (with its expired notification) instead of when
  -- its active expiry cycle happens to sample it, which on a server with many keys with a ttl can
  -- take minutes; then it leaves the index and watchers hear its delete.
  local now = nowms()
  local due = redis.call('ZRANGEBYSCORE', expk, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
  for _, k in ipairs(due) do
    local left = redis.call('PTTL', dk(k))
    if left == -2 then
      sweep(k)
    elseif left == -1 then
      redis.call('ZREM', expk, k)
    else
      -- Not yet expired for Redis (its clock inside a script is the script's start): look again then.
      redis.call('ZADD', expk, now + left, k)
    end
  end
  local nxt = redis.call('ZRANGE', expk, 0, 0, 'WITHSCORES')
  if #nxt == 0 then return { #due, -1 } end
  return { #due, math.max(0, tonumber(nxt[2]) - now) }
elseif op == 'touch' then
  -- owner, then key ttl pairs: extends keepAlive keys this store still owns. -> { 1|0, ... }
  local owner = ARGV[5]
  local out = {}
  for i = 6, #ARGV, 2 do
    local _, o = header(ARGV[i])
    if o == owner then
      redis.call('PEXPIRE', dk(ARGV[i]), ARGV[i + 1])
      deadline(ARGV[i], ARGV[i + 1])
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  return out
elseif op == 'lock' then
  -- key token ttl value -> { 1, fencing token } or { 0, pttl of the holder }
  local k, ttl = ARGV[5], tonumber(ARGV[7])
  if redis.call('SET', lk(k), ARGV[6], 'NX', 'PX', ttl) then
    return { 1, write(k, ARGV[8], ttl, '') }
  end
  return { 0, redis.call('PTTL', lk(k)) }
elseif op == 'renew' then
  -- key token ttl -> 1 held and extended, 0 not the holder, 2 still the holder but its key was
  -- deleted (delete, deleteTree): not extended; the holder gives the lock up (unlock) once it knows.
  local k = ARGV[5]
  if redis.call('GET', lk(k)) ~= ARGV[6] then return 0 end
  if redis.call('EXISTS', dk(k)) == 0 then return 2 end
  redis.call('PEXPIRE', lk(k), ARGV[7])
  redis.call('PEXPIRE', dk(k), ARGV[7])
  deadline(k, ARGV[7])
  return 1
elseif op == 'check' then
  -- key token -> as renew, without extending: 1 held, 0 not the holder, 2 its key was deleted
  local k = ARGV[5]
  if redis.call('GET', lk(k)) ~= ARGV[6] then return 0 end
  if redis.call('EXISTS', dk(k)) == 0 then return 2 end
  return 1
elseif op == 'unlock' then
  -- key token -> 1 released, 0 not the holder
  local k = ARGV[5]
  if redis.call('GET', lk(k)) ~= ARGV[6] then return 0 end
  redis.call('DEL', lk(k))
  if not remove(k) then
    -- Its data was already deleted, so no delete message woke the waiters: tell them it is free.
    redis.call('PUBLISH', chan, string.format('u0:%d:', #k) .. k)
  end
  return 1
end
return redis.error_reply('ERR kv: unknown operation ' .. tostring(op))
`;

export const SCRIPT_SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** The largest value a change message carries; watchers re-read larger ones. */
export const INLINE_LIMIT = 64 * 1024;

export type Change =
  | {
      readonly type: 'put';
      readonly seq: number;
      readonly key: string;
      readonly value: Uint8Array | undefined;
    }
  | { readonly type: 'delete'; readonly seq: number; readonly key: string }
  | { readonly type: 'tree'; readonly seq: number; readonly key: string };

function readNumber(buf: Buffer, from: number): { value: number; next: number } | undefined {
  let value = 0;
  let i = from;
  while (i < buf.length && buf[i] !== 58 /* : */) {
    const digit = (buf[i] as number) - 48;
    if (digit < 0 || digit > 9) return undefined;
    value = value * 10 + digit;
    i++;
  }
  if (i === from || i >= buf.length) return undefined;
  return { value, next: i + 1 };
}

/** The key of an unlock notice (`u0:<keylen>:<key>`); undefined for anything else. */
export function parseUnlock(buf: Buffer): string | undefined {
  if (buf[0] !== 117 /* u */) return undefined;
  const seq = readNumber(buf, 1);
  if (!seq) return undefined;
  const len = readNumber(buf, seq.next);
  if (!len || len.next + len.value !== buf.length) return undefined;
  return buf.toString('utf8', len.next, len.next + len.value);
}

/** Parses a change message; undefined for anything else. */
export function parseChange(buf: Buffer): Change | undefined {
  const type = buf[0];
  const seq = readNumber(buf, 1);
  if (!seq) return undefined;
  const len = readNumber(buf, seq.next);
  if (!len || len.next + len.value > buf.length) return undefined;
  const key = buf.toString('utf8', len.next, len.next + len.value);
  const rest = len.next + len.value;
  switch (type) {
    case 112: // p
      return { type: 'put', seq: seq.value, key, value: copyBytes(buf, rest) };
    case 80: // P
      return { type: 'put', seq: seq.value, key, value: undefined };
    case 100: // d
      return { type: 'delete', seq: seq.value, key };
    case 116: // t
      return { type: 'tree', seq: seq.value, key };
    default:
      return undefined;
  }
}

/**
 * The pair a key's data string holds (`<version>:<owner>:<value bytes>`, as the script writes it),
 * with a copy of its value (made by `copy`: see byte-slabs.ts); undefined when it is not in that form.
 */
export function parseData(key: string, buf: Buffer, copy = copyBytes): RawPair | undefined {
  const n = buf.length;
  let lastIndex = 0;
  let i = 0;
  for (; i < n; i++) {
    const digit = (buf[i] as number) - 48;
    if (digit === 10 /* : */) break;
    if (digit < 0 || digit > 9) return undefined;
    lastIndex = lastIndex * 10 + digit;
  }
  let end = i + 1;
  while (end < n && buf[end] !== 58 /* : */) end++;
  if (i === 0 || end >= n) return undefined;
  return { key, value: copy(buf, end + 1), lastIndex };
}
