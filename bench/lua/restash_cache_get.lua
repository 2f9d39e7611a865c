-- restash cache-aside hit: GET /cache/<namespace>/<key> of a stored 100-byte entry.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/cache/bench/item"
common.bearer()
done = common.done
