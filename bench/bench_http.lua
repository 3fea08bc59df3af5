-- bench_http.lua - wrk script for crdtd's REST API: timeline inserts or newest-50 selects.
--
--   MODE=insert wrk -t1 -c64 -d10s -s bench/bench_http.lua http://127.0.0.1:7379
--   MODE=select wrk -t1 -c64 -d10s -s bench/bench_http.lua http://127.0.0.1:7379
--
-- KEYS (default 1000) timelines, chosen at random per request. Keys ("tl000042") and members
-- ("m001" .. 12 characters) are text that needs no percent-encoding or JSON escaping, so every
-- request is a valid one without encoding work in Lua. Each wrk thread
-- writes its own members (thread id in the member), scores increase per thread.
-- done() prints one line: "RESULT mode=.. rps=.. p50_ms=.. p99_ms=.. errors=..".

local mode = os.getenv("MODE") or "insert"
local nkeys = tonumber(os.getenv("KEYS") or "1000")
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   counter = 0
   bad = 0
   math.randomseed((tid or 1) * 7919 + os.time())
end

local function key(n)
   return string.format("tl%06d", n)
end

function request()
   counter = counter + 1
   local k = key(math.random(0, nkeys - 1))
   if mode == "select" then
      return wrk.format("GET", "/v1/keys/" .. k .. "/timeline?limit=50")
   end
   local body = string.format(
      '{"type":"timeline","op":"add","member":"m%03d%08d","score":%d}', tid, counter, counter)
   return wrk.format("POST", "/v1/keys/" .. k, { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local errors = summary.errors.status + summary.errors.connect + summary.errors.read +
      summary.errors.write + summary.errors.timeout
   io.write(string.format("RESULT mode=%s rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
      mode, summary.requests / secs, latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, errors))
end
