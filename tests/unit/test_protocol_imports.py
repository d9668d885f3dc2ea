"""The protocol loads jsonrpcserver's dispatch without the package's asyncio and jsonschema front
ends (sidecar.protocol._defer_package_init), and the package still works for anyone who asks.

Each check runs in a fresh interpreter: what is imported is process-wide state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dispatch_answers_without_loading_the_package_front_ends() -> None:
    seen = run("""
        import json, sys
        from sidecar.protocol import MethodSpec, Protocol
        protocol = Protocol([MethodSpec("system.ping", "", lambda params: "pong")])
        answers = []
        protocol.handle(b'{"jsonrpc":"2.0","id":7,"method":"system.ping"}', answers.append)
        protocol.handle(b'{"jsonrpc":"2.0","id":8,"method":"nope"}', answers.append)
        print(json.dumps({"answers": answers, "asyncio": "asyncio" in sys.modules,
                          "jsonschema": "jsonschema" in sys.modules}))
    """)
    assert seen["answers"][0] == {"jsonrpc": "2.0", "result": "pong", "id": 7}
    assert seen["answers"][1]["error"]["code"] == -32601
    assert seen["asyncio"] is False and seen["jsonschema"] is False


def test_the_package_is_whole_for_code_that_asks_for_it() -> None:
    seen = run("""
        import json, sys
        from sidecar import protocol
        protocol._jsonrpcserver()
        import jsonrpcserver
        from jsonrpcserver import Success, dispatch
        answer = dispatch('{"jsonrpc":"2.0","method":"ping","id":1}', methods={"ping": lambda: Success("pong")})
        try:
            jsonrpcserver.no_such_name
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({"answer": json.loads(answer), "missing": missing,
                          "same": sys.modules["jsonrpcserver"] is jsonrpcserver}))
    """)
    assert seen["answer"] == {"jsonrpc": "2.0", "result": "pong", "id": 1}
    assert "no_such_name" in seen["missing"]
    assert seen["same"] is True


def test_threads_asking_at_once_all_get_the_package_names() -> None:
    seen = run("""
        import json, threading
        from sidecar import protocol
        protocol._jsonrpcserver()
        results, start = [], threading.Barrier(8)

        def ask():
            start.wait()
            try:
                from jsonrpcserver import dispatch_to_serializable, method
                results.append(callable(dispatch_to_serializable) and callable(method))
            except Exception as exc:
                results.append(repr(exc))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps({"results": results}))
    """)
    assert seen["results"] == [True] * 8
