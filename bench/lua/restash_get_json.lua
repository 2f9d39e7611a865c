-- restash GET as Upstash sends it: POST / with a JSON command and a bearer token.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = "/"
wrk.body = '["GET","bench:get"]'
wrk.headers["Content-Type"] = "application/json"
common.bearer()
done = common.done
