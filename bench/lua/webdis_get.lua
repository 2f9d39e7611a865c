-- webdis GET: GET /GET/<key> (webdis has no tokens; its ACL allows 127.0.0.1).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/GET/bench:get"
done = common.done
