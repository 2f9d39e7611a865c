-- webdis GET in the same path style as restash: GET /get/<key>.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/get/bench:get"
done = common.done
