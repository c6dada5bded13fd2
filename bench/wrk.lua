-- wrk script of bench/run.py.
--
-- With WRK_POST_BYTES=N in the environment every request is a POST of N bytes
-- (the "POST 64 KiB" scenario); otherwise wrk's default GET is sent.
-- done() prints one line "BENCH-JSON {...}" that bench/run.py parses: request
-- and byte counts, every error class, and latency percentiles in microseconds.

local post_bytes = tonumber(os.getenv("WRK_POST_BYTES") or "")
if post_bytes and post_bytes > 0 then
   wrk.method = "POST"
   wrk.body = string.rep("b", post_bytes)
   wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH-JSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
      "\"errors\": {\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d}, " ..
      "\"latency_us\": {\"mean\": %.1f, \"max\": %d, \"p50\": %d, \"p90\": %d, \"p99\": %d}}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
