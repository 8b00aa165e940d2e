"""HTTP/1.1 over the daemon's Unix socket, written by hand.

``http.client`` would pull in ``email.parser`` (~50 ms of imports); one request per connection with
``Connection: close`` needs only a socket, a status line, headers and a body (``Content-Length``, chunked, or
read to EOF).
"""

from __future__ import annotations

import json
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_TIMEOUT = 60.0
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_MAX_RESPONSE = 64 * 1024 * 1024


class ClientError(Exception):
    """Base of the errors the client reports; ``str()`` is the one-line message for the user."""


class ConnectError(ClientError):
    """The daemon's socket could not be reached (no socket, refused, no permission, timeout)."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(
            f"cannot connect to netd: {reason}; is netd running? (systemctl status netd) socket: {socket_path}; "
            "start it with `systemctl start netd` (or `netd --config /etc/netd/netd.toml`), or point --socket / "
            "NETD_SOCKET at its run_dir/netd.sock"
        )
        self.socket_path = socket_path
        self.reason = reason


class ProtocolError(ClientError):
    """The daemon answered something that is not a valid HTTP/JSON response."""


class ApiError(ClientError):
    """The daemon rejected the request: ``{"error": {"code", "message"}}`` with a 4xx/5xx status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Response:
    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # names lower-cased
        self.body = body

    def json(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ProtocolError(f"netd sent a response that is not JSON (HTTP {self.status}): {exc}") from None


def quote(component: str) -> str:
    """Percent-encode one URL path component (everything but RFC 3986 unreserved characters)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in component.encode())


def call(socket_path: str, method: str, path: str, body: Any = None, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send one request and return the decoded JSON body; raise :class:`ApiError` on a 4xx/5xx answer."""
    response = request(socket_path, method, path, body, timeout=timeout)
    if response.status >= 400:
        raise _api_error(response)
    return response.json()


def request(
    socket_path: str, method: str, path: str, body: Any = None, *, timeout: float = DEFAULT_TIMEOUT
) -> Response:
    payload = b"" if body is None else json.dumps(body).encode()
    head = [
        f"{method} {path} HTTP/1.1",
        "Host: localhost",
        "User-Agent: netd-ctl",
        "Accept: application/json",
        "Connection: close",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    if body is not None or method not in ("GET", "HEAD"):
        head.append(f"Content-Length: {len(payload)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + payload

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except FileNotFoundError:
            raise ConnectError(socket_path, "no such socket") from None
        except ConnectionRefusedError:
            raise ConnectError(socket_path, "connection refused") from None
        except PermissionError:
            raise ConnectError(
                socket_path, "permission denied (run as root or as a member of the socket's group)"
            ) from None
        except TimeoutError:
            raise ConnectError(socket_path, f"timed out after {timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(socket_path, exc.strerror or str(exc)) from None
        try:
            sock.sendall(raw)
            data = _read_response(sock)
        except TimeoutError:
            raise ProtocolError(f"netd did not answer {method} {path} within {timeout:g} s") from None
        except OSError as exc:
            raise ProtocolError(
                f"connection to netd failed during {method} {path}: {exc.strerror or exc}"
            ) from None
    finally:
        sock.close()
    return parse_response(data)


def _read_response(sock: socket.socket) -> bytes:
    """Read until EOF, or until the body announced by the headers is complete (whichever comes first)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_RESPONSE:
            raise ProtocolError(f"netd's response is larger than {_MAX_RESPONSE} bytes")
        data = b"".join(chunks)
        if _is_complete(data):
            return data
        chunks = [data]
    return b"".join(chunks)


def _is_complete(data: bytes) -> bool:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    try:
        _status, _reason, headers = _parse_head(data[:end])
    except ProtocolError:
        return False
    body = data[end + 4 :]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        if not body.endswith(b"\r\n\r\n"):
            return False
        try:
            _decode_chunked(body)
        except ProtocolError:
            return False
        return True
    length = headers.get("content-length")
    return length is not None and length.isdigit() and len(body) >= int(length)


def parse_response(data: bytes) -> Response:
    """Parse a complete HTTP/1.1 response (status line, headers, body)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if not data:
            raise ProtocolError("netd closed the connection without answering")
        raise ProtocolError("netd sent an incomplete HTTP response (no end of headers)")
    status, reason, headers = _parse_head(data[:end])
    body = data[end + 4 :]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _decode_chunked(body)
    elif "content-length" in headers:
        length_text = headers["content-length"]
        if not length_text.isdigit():
            raise ProtocolError(f"netd sent an invalid Content-Length: {length_text!r}")
        length = int(length_text)
        if len(body) < length:
            raise ProtocolError(f"netd's response was cut short ({len(body)} of {length} bytes)")
        body = body[:length]
    return Response(status, reason, headers, body)


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"netd sent an invalid HTTP status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"netd sent an invalid HTTP header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def _decode_chunked(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise ProtocolError("netd sent a truncated chunked response")
        size_text = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"netd sent an invalid chunk size: {size_text[:20]!r}") from None
        pos = eol + 2
        if size == 0:
            return b"".join(out)  # trailers, if any, are ignored
        if len(body) < pos + size + 2:
            raise ProtocolError("netd sent a truncated chunked response")
        out.append(body[pos : pos + size])
        pos += size + 2


def _api_error(response: Response) -> ApiError:
    code = "unknown"
    message = ""
    try:
        payload = json.loads(response.body) if response.body.strip() else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
    if not message:
        text = response.body.decode("utf-8", "replace").strip().splitlines()
        detail = f": {text[0][:200]}" if text else ""
        message = f"netd answered HTTP {response.status} {response.reason}{detail}".rstrip()
    # One line: a multi-line server message must not break the "netd-ctl: <message>" contract.
    message = " ".join(message.split())
    return ApiError(response.status, code, message)
