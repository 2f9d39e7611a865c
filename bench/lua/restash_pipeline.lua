-- restash /pipeline with BENCH_PIPELINE GETs of the 100-byte value per request.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local n = tonumber(os.getenv("BENCH_PIPELINE") or "")
if n == nil or n < 1 then
   error("BENCH_PIPELINE must be a positive number")
end
local items = {}
for i = 1, n do
   items[i] = '["GET","bench:get"]'
end
wrk.method = "POST"
wrk.path = "/pipeline"
wrk.body = "[" .. table.concat(items, ",") .. "]"
wrk.headers["Content-Type"] = "application/json"
common.bearer()
done = common.done
