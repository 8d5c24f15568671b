-- wrk script: replays pre-signed Twilio webhooks written by `loadgen sign`
-- (one request per line: `signature<TAB>body`), each request once.
--
--   wrk -t2 -c64 -d5s -s bench/signed.lua http://127.0.0.1:8080 -- requests.txt 2
--
-- (the last argument repeats wrk's thread count: a thread's `init` runs before the next
-- thread exists).
-- Thread k of n takes lines k, k+n, k+2n, ...; a thread that runs out starts again from its
-- first line and counts a wrap (the summary's `wrapped`), which turns new calls into retries:
-- sign more requests than the run can send. With `-` for the file, every request is wrk's own
-- (its URL and `-H` headers). `done` prints one JSON line with the counts and latency
-- percentiles (µs).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2] or "1")
  requests, index, wrapped, fixed = {}, 0, 0, args[1] == "-"
  if fixed then
    requests[1] = wrk.format()
    return
  end
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local signature, body = line:match("^([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/api/v1/incoming-call", {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Twilio-Signature"] = signature,
      }, body)
    end
    i = i + 1
  end
  if #requests == 0 then
    error("no requests for thread " .. id .. " in " .. args[1])
  end
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    if not fixed then
      wrapped = wrapped + 1
    end
  end
  return requests[index]
end

function done(summary, latency, _)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + thread:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"timeouts":%d,"wrapped":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout, wraps,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
