-- wrk script for the gateway benchmark: POST a JSON body read from a file, print a JSON summary.
--   wrk -t1 -c50 -d10s -s post.lua http://127.0.0.1:8080/v1/chat/completions -- body.json
-- The last line wrk prints is the summary as JSON (run.py reads it).

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. (args[2] or "sk-bench")
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
      '"latency_p50_us": %d, "latency_p99_us": %d, "latency_mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
      errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean))
end
