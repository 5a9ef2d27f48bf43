-- wrk script: POST /v1/conferences with a bearer token and a unique Idempotency-Key per request.
-- Arguments (after `--`): key prefix (unique per run and phase), bearer token.
-- done() prints one line "WRK_JSON {...}" that bench/ingress.py reads, with answers by status.

local body = '{"participants":[{"number":"4832830151"},{"number":"+5548999990000"}],'
  .. '"reference":"bench"}'
local counter = 0
local next_thread = 0
local threads = {}
statuses = {}
local prefix = "bench-"
local token = "bench-token"

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
  table.insert(threads, thread)
end

function init(args)
  prefix = (args[1] or "bench") .. "-" .. tostring(thread_id) .. "-"
  token = args[2] or token
end

function request()
  counter = counter + 1
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. counter,
  }
  return wrk.format("POST", "/v1/conferences", headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,'
      .. '"p99":%d,"max":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, table.concat(parts, ",")))
end
