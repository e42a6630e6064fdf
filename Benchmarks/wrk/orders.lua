-- POST /api/orders: market orders of 1 share, alternating buys and sells over
-- five symbols, from the users in BENCH_TOKENS taken in turn.
local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do tokens[#tokens + 1] = token end
local symbols = { "AAPL", "MSFT", "KO", "T", "SPY" }
local counter = 0

request = function()
    counter = counter + 1
    local side = (counter % 2 == 0) and "SELL" or "BUY"
    local symbol = symbols[(math.floor(counter / 2) % #symbols) + 1]
    local body = string.format('{"symbol":"%s","quantity":"1","side":"%s","order_type":"MARKET"}', symbol, side)
    local token = tokens[(math.floor(counter / 2) % #tokens) + 1]
    return wrk.format("POST", "/api/orders", { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end
