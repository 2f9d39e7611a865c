"""Opens N keep-alive HTTP connections to 127.0.0.1:PORT, sends one request on
each (so the server has set every connection up), prints `READY <open> <ok>`, and
holds them open until its standard input closes.

    python3 hold.py PORT N PATH [BEARER_TOKEN]
"""

import asyncio
import sys

BATCH = 200


async def one(port, request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_ok = head.split(b" ", 2)[1].startswith(b"2")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return writer, status_ok


async def main():
    port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    writers, ok, failed = [], 0, 0
    for start in range(0, count, BATCH):
        n = min(BATCH, count - start)
        results = await asyncio.gather(
            *(one(port, request) for _ in range(n)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                failed += 1
            else:
                writers.append(result[0])
                ok += result[1]
    print(f"READY {len(writers)} {ok} {failed}", flush=True)
    # Hold until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())
