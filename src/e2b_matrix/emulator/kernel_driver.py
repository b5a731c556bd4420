"""The code interpreter inside a sandbox of the emulator's Docker mode (run there, not imported here).

E2B's code-interpreter-v1 answers ``POST /execute`` on port 49999 with JSON lines
while a Jupyter kernel runs the code (e2b-dev/code-interpreter template/server:
main.py, messaging.py, stream.py). The sandbox proxy (sandboxes.py) runs this
file in the sandbox's container with its Python (``python3 -c``): it starts an
IPython kernel (ipykernel, which the stand-in of code-interpreter-v1 holds, with
jupyter-client), reads requests on stdin (a line ``<code bytes> <env bytes>``, then
the code, then the cell's environment as NUL-separated ``KEY=value``: no parsing
but counting) and writes what the server would stream for each, one JSON
object per line, ending with ``{"type": "end_of_execution"}``: the kernel's
``execute_input`` as ``number_of_executions``, ``stream`` as ``stdout`` /
``stderr``, ``execute_result`` and ``display_data`` as results (the main one for
``execute_result``), the first ``error``, then the end when the kernel is idle.
The state lives in the kernel: ``x = 42`` then ``x + 8`` gives 50.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

# Result's fields from a display's MIME bundle (template/server/api/models/result.py).
_FORMATS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}


def result(main: bool, data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    out: dict[str, Any] = {"type": "result"}
    for mime, name in _FORMATS.items():
        if mime in data:
            out[name] = data.pop(mime)
    text = out.get("text")
    if isinstance(text, str) and len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        out["text"] = text[1:-1]  # the server strips a repr's quotes
    out["extra"] = data
    out["is_main_result"] = main
    return out


def relay(client: Any, msg_id: str, emit: Callable[[dict[str, Any]], None]) -> None:
    """What the server streams for one execution, from the kernel's messages until it is idle."""
    errored = False
    while True:
        msg = client.get_iopub_msg()
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "execute_input":
            emit({"type": "number_of_executions", "execution_count": content["execution_count"]})
        elif kind == "stream":
            emit({"type": content["name"], "text": content["text"], "timestamp": msg["header"]["date"]})
        elif kind in ("execute_result", "display_data"):
            emit(result(kind == "execute_result", content["data"]))
        elif kind == "error" and not errored:
            errored = True
            emit(
                {
                    "type": "error",
                    "name": content["ename"],
                    "value": content["evalue"],
                    "traceback": "".join(content["traceback"]),
                }
            )
        elif kind == "status" and content["execution_state"] == "idle":
            return


def main() -> None:
    from jupyter_client.manager import start_new_kernel  # type: ignore[import-not-found]  # the sandbox's Python has it

    cwd = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    manager, client = start_new_kernel(kernel_name="python3", cwd=cwd)
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol; the kernel's own output goes through messages

    def emit(obj: dict[str, Any]) -> None:  # dates as the server's JSON encoder writes them
        out.write(json.dumps(obj, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else str(o)) + "\n")

    stdin = sys.stdin.buffer
    try:
        while header := stdin.readline():
            sizes = [int(n) for n in header.split()]
            code = stdin.read(sizes[0]).decode()
            envs = dict(kv.split("=", 1) for kv in stdin.read(sizes[1]).decode().split("\0") if kv)
            if envs:
                client.execute(f"import os; os.environ.update({dict(envs)!r})", silent=True)
            relay(client, client.execute(code, store_history=True, allow_stdin=False, stop_on_error=True), emit)
            if envs:
                client.execute(f"import os\nfor _k in {list(envs)!r}: os.environ.pop(_k, None)", silent=True)
            out.write('{"type": "end_of_execution"}\n')  # byte for byte: the proxy looks for this line
    finally:
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
