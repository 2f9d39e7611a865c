-- webdis SET in its POST form: POST / with "SET/<key>/<value>" as the body
-- (webdis README, "Command format").
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = "/"
wrk.body = "SET/bench:set/" .. common.value
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
done = common.done
