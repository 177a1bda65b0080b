"""A fake Hugging Face Hub on 127.0.0.1 serving local folders as repositories (and plain
files, for voice downloads), optionally slowly, so that downloads can be watched."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """A few endpoints of the Hugging Face Hub API, serving local folders as repositories:
    repo info, the file tree, and HEAD/GET of ``/{repo}/resolve/{revision}/{file}``.
    Also serves any file under ``files`` at ``/files/<name>`` (for voice downloads)."""

    def __init__(
        self,
        repos: dict[str, Path],
        files: dict[str, bytes] | None = None,
        bytes_per_second: float | None = None,
    ) -> None:
        self.repos = repos
        self.files = files or {}
        self.bytes_per_second = bytes_per_second
        """Throttle the bodies of file downloads to this rate (None: as fast as it goes)."""
        self.stop_sending = threading.Event()
        """Set: throttled downloads stop sending (the connection stays open, silent)."""
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(
            target=self.server.serve_forever, name="vvreader-test-hub", daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def names(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def downloaded(self) -> set[str]:
        return {
            p.split("/resolve/")[1].split("/", 1)[1]
            for m, p in self.requests
            if m == "GET" and "/resolve/" in p
        }

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        head: bool,
        headers: dict[str, str],
        slow: bool = False,
    ) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        if not (slow and self.bytes_per_second):
            h.wfile.write(body)
            return
        step = 64 * 1024
        for at in range(0, len(body), step):
            while self.stop_sending.is_set():
                time.sleep(0.05)
            try:
                h.wfile.write(body[at : at + step])
                h.wfile.flush()
            except OSError:  # the client went away
                return
            time.sleep(step / self.bytes_per_second)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append((h.command, h.path))
        as_json = {"Content-Type": "application/json"}
        if path.startswith("/files/") and path[7:] in self.files:
            return self._send(h, 200, self.files[path[7:]], head, {}, slow=True)
        api = re.match(r"^/api/models/([^/]+/[^/]+)(/revision/[^/]+|/tree/.+)?$", path)
        if api:
            repo = api.group(1)
            if repo not in self.repos:
                return self._send(
                    h,
                    404,
                    b'{"error": "Repository not found"}',
                    head,
                    {**as_json, "X-Error-Code": "RepoNotFound"},
                )
            if (api.group(2) or "").startswith("/tree/"):
                body = [
                    {
                        "type": "file",
                        "path": n,
                        "size": (self.repos[repo] / n).stat().st_size,
                        "oid": hashlib.sha1((self.repos[repo] / n).read_bytes()).hexdigest(),
                    }
                    for n in self.names(repo)
                ]
            else:
                body = {
                    "id": repo,
                    "sha": self.commit(repo),
                    "private": False,
                    "siblings": [{"rfilename": n} for n in self.names(repo)],
                }
            return self._send(h, 200, json.dumps(body).encode(), head, as_json)
        res = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
        if (
            res
            and res.group(1) in self.repos
            and (self.repos[res.group(1)] / res.group(2)).is_file()
        ):
            data = (self.repos[res.group(1)] / res.group(2)).read_bytes()
            return self._send(
                h,
                200,
                data,
                head,
                {
                    "X-Repo-Commit": self.commit(res.group(1)),
                    "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    "Content-Type": "application/octet-stream",
                },
                slow=True,
            )
        code = "EntryNotFound" if res and res.group(1) in self.repos else "RepoNotFound"
        return self._send(
            h, 404, b'{"error": "not found"}', head, {**as_json, "X-Error-Code": code}
        )


def official_hub(model: Path, root: Path, bytes_per_second: float | None = None) -> FakeHub:
    """A hub serving ``model`` (a tiny model folder) as the official repository would:
    config, preprocessor config naming the Qwen tokenizer repository, weights and voices,
    with the tokenizer in that repository of its own."""
    from engine.hub import DEFAULT_MODEL, TOKENIZER_REPO

    official = root / "official"
    official.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model / name, official / name)
    shutil.copytree(model / "voices", official / "voices")
    (official / "preprocessor_config.json").write_text(
        json.dumps({"language_model_pretrained_name": TOKENIZER_REPO})
    )
    qwen = root / "qwen"
    qwen.mkdir()
    shutil.copy(model / "tokenizer.json", qwen / "tokenizer.json")
    return FakeHub(
        {DEFAULT_MODEL: official, TOKENIZER_REPO: qwen}, bytes_per_second=bytes_per_second
    )
