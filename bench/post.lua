-- wrk script: the same priced POST for every target; reports percentiles as one JSON line.
-- BENCH_KEY: the bearer key; or BENCH_KEYS, several separated by commas, taken in turn request by request, so that
-- concurrent calls spread over many keys' rows.
wrk.method = "POST"
wrk.body = "amount=100&currency=usd&customer=cus_bench"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local keys = {}
for key in string.gmatch(os.getenv("BENCH_KEYS") or os.getenv("BENCH_KEY") or "none", "[^,]+") do
  keys[#keys + 1] = key
end
wrk.headers["Authorization"] = "Bearer " .. keys[1]

if #keys > 1 then
  -- Runs in wrk's main state, once per thread before they start: thread i begins i halves of the list along
  -- (run.ts runs wrk with two threads).
  local threads = 0
  function setup(thread)
    thread:set("first_key", threads * math.floor(#keys / 2))
    threads = threads + 1
  end
  local taken = 0
  function request()
    wrk.headers["Authorization"] = "Bearer " .. keys[(first_key + taken) % #keys + 1]
    taken = taken + 1
    return wrk.format()
  end
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
