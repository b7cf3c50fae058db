-- wrk script: POSTs one chat completion, the same body every time, and prints one machine-readable
-- RESULT line from done(). Settings come from the environment (bench/run.sh sets them):
--   BENCH_MODEL   model name (required)
--   BENCH_STREAM  "1" for "stream": true with include_usage (wrk times the whole stream)
--   BENCH_AUTH    the whole Authorization header value, or empty for none
-- wrk runs request()/response() in one Lua state per thread and done() in another, so the
-- counts come from wrk's own summary, not from globals.
local model = os.getenv("BENCH_MODEL") or error("BENCH_MODEL is not set")
local stream = os.getenv("BENCH_STREAM") == "1"
local auth = os.getenv("BENCH_AUTH") or ""

local body
if stream then
    body = string.format('{"model":"%s","stream":true,"stream_options":{"include_usage":true},' ..
                         '"messages":[{"role":"user","content":"Say hello to the benchmark."}]}', model)
else
    body = string.format('{"model":"%s","messages":[{"role":"user","content":"Say hello to the benchmark."}]}',
                         model)
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
if auth ~= "" then
    wrk.headers["Authorization"] = auth
end

done = function(summary, latency, requests)
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        "RESULT p50_us=%d p99_us=%d rps=%.1f requests=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
        latency:percentile(50), latency:percentile(99), summary.requests / secs, summary.requests,
        e.status, e.connect, e.read, e.write, e.timeout))
end
