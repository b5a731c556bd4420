"""Tiny wheels and a package index on 127.0.0.1, so `e2b-matrix compile` runs uv without the network.

A wheel is a zip with ``<name>-<version>.dist-info/{METADATA,WHEEL,RECORD}``; written with a fixed
date, the same call gives the same bytes (and hashes) every time. ``shipped(dir)`` makes what the
shipped layers ask for at every version the test index (tests/data/index) knows: fusepy, and
nexus-ai-fs requiring ``tinydep>=1.0`` (1.0 and 2.0 exist). ``SimpleIndex`` serves a folder of
wheels as PEP 691 JSON with upload times, which ``--exclude-newer`` needs (a --find-links folder
has none).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

DATA = Path(__file__).parent / "data"
EPOCH = (1980, 1, 1, 0, 0, 0)


def wheel(folder: Path, name: str, version: str, requires=(), requires_python: str | None = None) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``folder``; its bytes depend on the arguments only."""
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += f"Requires-Python: {requires_python}\n" if requires_python else ""
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    members = {f"{dist}.dist-info/METADATA": meta,
               f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n"}
    record = "".join(f"{path},sha256={_b64(text)},{len(text.encode())}\n" for path, text in members.items())
    members[f"{dist}.dist-info/RECORD"] = record + f"{dist}.dist-info/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in members.items():
            z.writestr(zipfile.ZipInfo(member, EPOCH), text)
    return path


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def shipped(folder: Path) -> Path:
    """Wheels for everything the shipped layers' pip steps ask for, at every version the test index has."""
    wheel(folder, "fusepy", "3.0.1")
    for version in ("1.0", "2.0"):
        wheel(folder, "tinydep", version)
    releases = json.loads((DATA / "index" / "nexus-ai-fs" / "json").read_text())["releases"]
    for version, dists in releases.items():
        wheel(folder, "nexus-ai-fs", version, ["tinydep>=1.0"], dists[0].get("requires_python"))
    return folder


class SimpleIndex:
    """A PEP 691 JSON simple index of the wheels in ``folder`` on 127.0.0.1; ``uploaded`` maps a
    wheel's file name to its upload time (default 2022-01-01). ``with SimpleIndex(...) as url:``."""

    def __init__(self, folder: Path, uploaded: dict[str, str] | None = None):
        self.folder, self.uploaded = Path(folder), uploaded or {}
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                data, kind = index.answer(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                if body and data:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def answer(self, path: str) -> tuple[bytes | None, str]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "simple":
            files = []
            for whl in sorted(self.folder.glob("*.whl")):
                if whl.name.split("-")[0].replace("_", "-") == parts[1]:
                    files.append({"filename": whl.name, "url": f"/files/{whl.name}",
                                  "hashes": {"sha256": hashlib.sha256(whl.read_bytes()).hexdigest()},
                                  "upload-time": self.uploaded.get(whl.name, "2022-01-01T00:00:00Z")})
            if not files:
                return None, "text/plain"
            doc = {"meta": {"api-version": "1.1"}, "name": parts[1], "files": files}
            return json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json"
        if len(parts) == 2 and parts[0] == "files" and (self.folder / parts[1]).is_file():
            return (self.folder / parts[1]).read_bytes(), "application/octet-stream"
        return None, "text/plain"

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
