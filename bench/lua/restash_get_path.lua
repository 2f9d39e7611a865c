-- restash GET in path style: GET /get/<key> with a bearer token.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/get/bench:get"
common.bearer()
done = common.done
