-- restash SET of a 100-byte value: POST / with a JSON command and a bearer token.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = "/"
wrk.body = '["SET","bench:set","' .. common.value .. '"]'
wrk.headers["Content-Type"] = "application/json"
common.bearer()
done = common.done
