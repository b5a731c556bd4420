"""Tiny wheels and package indexes of them, so uv answers every test without the network.

A wheel is a zip with ``<name>-<version>.dist-info/{METADATA,WHEEL,RECORD}``; written with a fixed
date, the same call gives the same bytes (and hashes) every time. ``shipped(dir)`` makes what the
shipped layers ask for: fusepy, tinydep 1.0 and 2.0, and every release of nexus-ai-fs in
``NEXUS`` (each requiring ``tinydep>=1.0``), with a PEP 503 simple index of them in ``dir/simple``
(``simple``): uv reads it through ``--index-url file://...`` (``index_url``), and it says what a
--find-links folder cannot: each file's Requires-Python (``data-requires-python``, which uv reads
without the wheel) and which files are yanked (``data-yanked``). ``SimpleIndex`` serves a folder of
wheels over HTTP on 127.0.0.1 as PEP 691 JSON with upload times, which ``--exclude-newer`` needs.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import json
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path

EPOCH = (1980, 1, 1, 0, 0, 0)
# The tests' nexus-ai-fs releases (version: Requires-Python), and the yanked ones. What "latest" must
# make of them: 3.11 -> 0.5.6 (not the rc), 3.12 and 3.13 -> 0.9.26 (0.9.27 is yanked, 0.9.38 and up
# need 3.14, 0.6.x 3.13), 3.14 -> 0.10.1, 3.10 -> none.
NEXUS = {
    "0.1.2": ">=3.11",
    "0.3.9": ">=3.11",
    "0.5.5": ">=3.11",
    "0.5.6": ">=3.11",
    "0.6.0": ">=3.13",
    "0.6.4": ">=3.13",
    "0.7.0": ">=3.12",
    "0.9.0": ">=3.12",
    "0.9.9": ">=3.12",
    "0.9.25": ">=3.12",
    "0.9.26": ">=3.12",
    "0.9.27": ">=3.12",
    "0.9.38": ">=3.14",
    "0.9.43": ">=3.14",
    "0.10.0": ">=3.14",
    "0.10.1": ">=3.14",
    "0.11.0rc1": ">=3.11",
}
NEXUS_YANKED = ("0.9.27",)


def wheel(folder: Path, name: str, version: str, requires=(), requires_python: str | None = None) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``folder``; its bytes depend on the arguments only."""
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += f"Requires-Python: {requires_python}\n" if requires_python else ""
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    members = {
        f"{dist}.dist-info/METADATA": meta,
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
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
    """Wheels for everything the shipped layers' pip steps ask for, and the simple index of them."""
    wheel(folder, "fusepy", "3.0.1")
    for version in ("1.0", "2.0"):
        wheel(folder, "tinydep", version)
    for version, requires_python in NEXUS.items():
        wheel(folder, "nexus-ai-fs", version, ["tinydep>=1.0"], requires_python)
    simple(folder, yanked=[wheel_name("nexus-ai-fs", v) for v in NEXUS_YANKED])
    return folder


def wheel_name(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def project_of(whl: Path) -> str:
    return whl.name.split("-")[0].replace("_", "-")


def requires_python(whl: Path) -> str | None:
    """The Requires-Python in a wheel's METADATA (what an index publishes beside the file)."""
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Python: "):
                return line.split(": ", 1)[1]
    return None


def simple(folder: Path, yanked: Iterable[str] = ()) -> str:
    """(Re)write ``folder/simple``: a PEP 503 page per project of the wheels in ``folder``, each link
    with the file's sha256, its Requires-Python and, for the wheel names in ``yanked``, a yanked mark.
    Returns the index's file:// URL."""
    yanked = set(yanked)
    projects: dict[str, list[str]] = {}
    for whl in sorted(folder.glob("*.whl")):
        rp = requires_python(whl)
        attrs = (f' data-requires-python="{html.escape(rp)}"' if rp else "") + (
            ' data-yanked=""' if whl.name in yanked else ""
        )
        digest = hashlib.sha256(whl.read_bytes()).hexdigest()
        projects.setdefault(project_of(whl), []).append(
            f'<a href="../../{whl.name}#sha256={digest}"{attrs}>{whl.name}</a><br/>'
        )
    for name, links in projects.items():
        page = folder / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<!DOCTYPE html>\n<html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    top = "".join(f'<a href="{name}/">{name}</a><br/>\n' for name in sorted(projects))
    (folder / "simple" / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{top}</body></html>\n")
    return index_url(folder)


def index_url(folder: Path) -> str:
    """The file:// URL of ``folder``'s simple index (``simple``)."""
    return (folder / "simple").as_uri()


class SimpleIndex:
    """A PEP 691 JSON simple index of the wheels in ``folder`` on 127.0.0.1; ``uploaded`` maps a
    wheel's file name to its upload time (default 2022-01-01), ``yanked`` names the yanked ones
    (default: those of ``NEXUS_YANKED``). ``with SimpleIndex(...) as url:``; ``requests`` counts
    the requests it answered."""

    def __init__(self, folder: Path, uploaded: dict[str, str] | None = None, yanked: Iterable[str] | None = None):
        self.folder, self.uploaded = Path(folder), uploaded or {}
        self.yanked = set(yanked if yanked is not None else [wheel_name("nexus-ai-fs", v) for v in NEXUS_YANKED])
        self.requests = 0
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # no 40 ms delayed ACK between headers and body

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
        self.requests += 1
        parts = [p for p in path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "simple":
            files = []
            for whl in sorted(self.folder.glob("*.whl")):
                if project_of(whl) == parts[1]:
                    files.append(
                        {
                            "filename": whl.name,
                            "url": f"/files/{whl.name}",
                            "hashes": {"sha256": hashlib.sha256(whl.read_bytes()).hexdigest()},
                            "requires-python": requires_python(whl),
                            "yanked": whl.name in self.yanked,
                            "upload-time": self.uploaded.get(whl.name, "2022-01-01T00:00:00Z"),
                        }
                    )
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
