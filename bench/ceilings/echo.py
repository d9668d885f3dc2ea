"""The Python end of the NDJSON pipe ceiling: answer each JSON-RPC line, nothing else."""

import os
import sys

import orjson


def main() -> None:
    out = os.dup(1)
    stdin = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    for line in stdin:
        msg = orjson.loads(line)
        os.write(out, orjson.dumps({"jsonrpc": "2.0", "result": "pong", "id": msg["id"]}) + b"\n")


if __name__ == "__main__":
    sys.exit(main())
