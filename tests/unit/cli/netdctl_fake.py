"""A tiny fake netd: a stdlib Unix-socket HTTP server answering canned responses, recording requests."""

from __future__ import annotations

import json
import socketserver
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Canned:
    status: int = 200
    body: Any = None
    chunked: bool = False
    raw: bytes | None = None  # sent verbatim instead of a built response


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeNetd:
    socket_path: str
    routes: dict[tuple[str, str], Canned] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def answer(
        self, method: str, path: str, body: Any = None, status: int = 200, *, chunked: bool = False
    ) -> None:
        self.routes[(method, path)] = Canned(status, body, chunked)

    def answer_raw(self, method: str, path: str, raw: bytes) -> None:
        self.routes[(method, path)] = Canned(raw=raw)


def _reason(status: int) -> str:
    return {
        200: "OK",
        201: "Created",
        204: "No Content",
        400: "Bad Request",
        404: "Not Found",
        409: "Conflict",
    }.get(status, "Internal Server Error")


def build_response(canned: Canned) -> bytes:
    if canned.raw is not None:
        return canned.raw
    payload = b"" if canned.body is None else json.dumps(canned.body).encode()
    head = (
        f"HTTP/1.1 {canned.status} {_reason(canned.status)}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
    )
    if canned.chunked:
        pieces = [payload[i : i + 7] for i in range(0, len(payload), 7)]
        body = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + body
    return (head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def handle(self) -> None:
        request_line = self.rfile.readline().decode("latin-1").strip()
        method, path, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while (line := self.rfile.readline().decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = self.rfile.read(int(headers.get("content-length", "0")))
        fake = self.server.fake
        fake.requests.append(Recorded(method, path, headers, json.loads(raw) if raw else None))
        canned = fake.routes.get((method, path))
        if canned is None:
            canned = Canned(404, {"error": {"code": "not_found", "message": f"no route {method} {path}"}})
        self.wfile.write(build_response(canned))


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    fake: FakeNetd
