-- GET the URL's path with a bearer token; BENCH_TOKENS is a comma-separated list,
-- used in turn so that several users can share one run.
local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do tokens[#tokens + 1] = token end
local counter = 0

request = function()
    counter = counter + 1
    return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1] })
end
