-- POST /api/auth/login for the users bench-login-N@example.com (N from 0 to
-- BENCH_LOGIN_USERS - 1). Each thread takes its own half of the users, so no
-- account has more than one attempt in flight and the lockout never trips.
local users = tonumber(os.getenv("BENCH_LOGIN_USERS") or "64")
local threads = 0
local first, count, counter = 0, users, 0

setup = function(thread)
    thread:set("first", threads)
    threads = threads + 1
end

init = function(args)
    local share = math.floor(users / 2)
    first = (first or 0) * share
    count = share
end

request = function()
    counter = counter + 1
    local email = string.format("bench-login-%d@example.com", first + (counter % count))
    local body = string.format('{"email":"%s","password":"correct horse battery staple"}', email)
    return wrk.format("POST", "/api/auth/login", { ["Content-Type"] = "application/json" }, body)
end
