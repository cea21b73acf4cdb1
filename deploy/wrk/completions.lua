-- completions.lua — wrk script: POSTs small /v1/completions requests to flexq-serve.
--
--   wrk -t2 -c8 -d5s --timeout 30s -s deploy/wrk/completions.lua \
--       http://127.0.0.1:8000/v1/completions
--
-- Each request asks for a short greedy completion (max_tokens 8 by default) of one of a few
-- prompts, in turn. Environment (all optional):
--   FLEXQ_WRK_MODEL       "model" of the requests; unset = no "model" field (the served one)
--   FLEXQ_WRK_MAX_TOKENS  max_tokens per request (default 8)
--   FLEXQ_WRK_API_KEY     sent as "Authorization: Bearer KEY" when set
--   FLEXQ_WRK_JSON        when set, done() prints one line of JSON with the counts:
--                         WRK_JSON {"requests", "duration_us", "bytes", "connect", "read",
--                         "write", "status", "timeout", "latency_p50_us", "latency_p99_us",
--                         "statuses": {"200": n, "429": n, ...}}
-- wrk counts non-2xx/3xx responses in errors.status; socket errors in connect/read/write/timeout.

local model = os.getenv("FLEXQ_WRK_MODEL")
local max_tokens = tonumber(os.getenv("FLEXQ_WRK_MAX_TOKENS") or "8") or 8
local api_key = os.getenv("FLEXQ_WRK_API_KEY")

local prompts = {
   "The capital of France is",
   "Once upon a time, in a small village,",
   "Here is a list of fruits: apple, banana,",
   "The quick brown fox",
}

local function json_string(s)
   return '"' .. s:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
   end) .. '"'
end

local bodies = {}
for i, p in ipairs(prompts) do
   local fields = {}
   if model and model ~= "" then
      fields[#fields + 1] = '"model": ' .. json_string(model)
   end
   fields[#fields + 1] = '"prompt": ' .. json_string(p)
   fields[#fields + 1] = '"max_tokens": ' .. tostring(max_tokens)
   fields[#fields + 1] = '"temperature": 0'
   bodies[i] = "{" .. table.concat(fields, ", ") .. "}"
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if api_key and api_key ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. api_key
end
wrk.body = bodies[1]

-- per thread (each wrk thread has its own Lua state)
local counter = 0
statuses = {}

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

function request()
   counter = counter + 1
   return wrk.format(nil, nil, nil, bodies[(counter % #bodies) + 1])
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   if not os.getenv("FLEXQ_WRK_JSON") then
      return
   end
   local all = {}
   for _, t in ipairs(threads) do
      local st = t:get("statuses") or {}
      for code, n in pairs(st) do
         all[code] = (all[code] or 0) + n
      end
   end
   local parts = {}
   for code, n in pairs(all) do
      parts[#parts + 1] = string.format('"%d": %d', code, n)
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d, "latency_p50_us": %d, "latency_p99_us": %d, ' ..
      '"statuses": {%s}}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(99), table.concat(parts, ", ")))
end
