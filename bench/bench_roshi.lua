-- bench_roshi.lua - wrk script for roshi-server's HTTP API (and crdtd's roshi listener): 10-tuple
-- inserts or newest-50 selects, the same requests for every server bench_roshi.sh compares.
--
--   MODE=insert wrk -t1 -c64 -d5s -s bench/bench_roshi.lua http://127.0.0.1:6302
--   MODE=select wrk -t1 -c64 -d5s -s bench/bench_roshi.lua http://127.0.0.1:6302
--   env: KEYS=1000 (key space), TUPLES=10 (tuples per insert), LIMIT=50 (select size)
--
-- Only the part of the API crdtd and roshi-server both accept today: POST / with a JSON array of
-- {"key","score","member"} (key and member standard base64), and GET / with a JSON array of one
-- key as the body and ?limit=N (newest first, no offset, no cursor, not coalesced).
-- Keys are "tl%07d" (9 bytes, so 12 base64 characters without padding), encoded once at init;
-- a member is written directly as 12 base64 characters ("m" .. thread .. counter, digits and
-- letters only), so a request costs Lua no encoding. Each tuple goes to a random key; scores and
-- members increase per wrk thread (the thread id is in the member).
-- done() prints one line: "RESULT mode=.. rps=.. p50_ms=.. p99_ms=.. requests=.. non2xx=..
-- sockerr=..": non2xx counts responses with a status above 399, which must be 0.

local mode = os.getenv("MODE") or "insert"
local nkeys = tonumber(os.getenv("KEYS") or "1000")
local ntuples = tonumber(os.getenv("TUPLES") or "10")
local limit = tonumber(os.getenv("LIMIT") or "50")
local threads = {}

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- standard base64 of a string whose length is a multiple of 3 (no padding needed)
local function b64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + b * 256 + c
      for shift = 18, 0, -6 do
         local d = math.floor(n / 2 ^ shift) % 64
         out[#out + 1] = alphabet:sub(d + 1, d + 1)
      end
   end
   return table.concat(out)
end

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   counter = 0
   keys = {}
   selects = {}
   for k = 1, nkeys do
      keys[k] = b64(string.format("tl%07d", k - 1))
      selects[k] = wrk.format("GET", "/?limit=" .. limit,
         { ["Content-Type"] = "application/json" }, '["' .. keys[k] .. '"]')
   end
   math.randomseed((tid or 1) * 7919 + os.time())
end

function request()
   if mode == "select" then
      return selects[math.random(1, nkeys)]
   end
   local parts = {}
   for i = 1, ntuples do
      counter = counter + 1
      parts[i] = string.format('{"key":"%s","score":%d,"member":"m%03d%08d"}',
         keys[math.random(1, nkeys)], counter, tid, counter)
   end
   return wrk.format("POST", "/", { ["Content-Type"] = "application/json" },
      "[" .. table.concat(parts, ",") .. "]")
end

function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "RESULT mode=%s rps=%.0f p50_ms=%.3f p99_ms=%.3f requests=%d non2xx=%d sockerr=%d\n",
      mode, summary.requests / secs, latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, summary.requests, e.status,
      e.connect + e.read + e.write + e.timeout))
end
