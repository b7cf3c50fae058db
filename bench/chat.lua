-- wrk script: POSTs one chat completion, the same body every time, and prints one machine-readable
-- RESULT line from done(). Settings come from the environment (bench/run.sh sets them):
--   BENCH_MODEL   model name (required)
--   BENCH_STREAM  "1" for "stream": true with include_usage (wrk times the whole stream)
--   BENCH_AUTH    the whole Authorization header value, or empty for none (for the anthropic
--                 shape: the x-api-key value)
--   BENCH_SHAPE   "openai" (default: a chat completion) or "anthropic" (the Anthropic Messages
--                 request the gateway's translation sends, posted to the simulator directly)
--   BENCH_KEYS    a file of API keys, one a line: each request takes the next (many tenants);
--                 overrides BENCH_AUTH
-- wrk runs request()/response() in one Lua state per thread and done() in another, so the
-- counts come from wrk's own summary, not from globals.
local model = os.getenv("BENCH_MODEL") or error("BENCH_MODEL is not set")
local stream = os.getenv("BENCH_STREAM") == "1"
local auth = os.getenv("BENCH_AUTH") or ""
local shape = os.getenv("BENCH_SHAPE") or "openai"

local body
if shape == "anthropic" then
    -- what the anthropic adapter builds from the OpenAI body below (its default max_tokens)
    body = string.format('{"model":"%s","max_tokens":4096,' ..
                         '"messages":[{"role":"user","content":"Say hello to the benchmark."}]}', model)
elseif stream then
    body = string.format('{"model":"%s","stream":true,"stream_options":{"include_usage":true},' ..
                         '"messages":[{"role":"user","content":"Say hello to the benchmark."}]}', model)
else
    body = string.format('{"model":"%s","messages":[{"role":"user","content":"Say hello to the benchmark."}]}',
                         model)
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
if shape == "anthropic" then
    wrk.headers["anthropic-version"] = "2023-06-01"
    if auth ~= "" then
        wrk.headers["x-api-key"] = auth
    end
elseif auth ~= "" then
    wrk.headers["Authorization"] = auth
end

local keys_file = os.getenv("BENCH_KEYS") or ""
if keys_file ~= "" then
    local keys = {}
    for line in io.lines(keys_file) do
        if line ~= "" then
            keys[#keys + 1] = "Bearer " .. line
        end
    end
    assert(#keys > 0, "BENCH_KEYS holds no key")
    -- each thread starts at a different place, so threads do not walk the tenants in step
    local i = math.random(#keys)
    request = function()
        i = i % #keys + 1
        wrk.headers["Authorization"] = keys[i]
        return wrk.format()
    end
end

done = function(summary, latency, requests)
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        "RESULT p50_us=%d p99_us=%d rps=%.1f requests=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
        latency:percentile(50), latency:percentile(99), summary.requests / secs, summary.requests,
        e.status, e.connect, e.read, e.write, e.timeout))
end
