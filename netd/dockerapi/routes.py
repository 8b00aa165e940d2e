"""Docker's Engine API network routes on a second Unix socket (``[docker_api] listen``), for the docker CLI, the
Docker SDK and other Docker tools: ``/_ping``, ``/version``, ``/networks*``, with or without a ``/v1.NN`` prefix.

``Container`` in connect/disconnect is a netd namespace name, or the id (or a unique prefix of it) of a container
a runtime attached through the CNI plugin.  Errors are Docker's ``{"message": ...}``.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from netd import __version__
from netd.api import _body
from netd.core.errors import ConflictError, InvalidError, NetdError, NotFoundError
from netd.dockerapi.compat import (
    API_VERSION,
    LIST_FILTERS,
    MIN_API_VERSION,
    PRUNE_FILTERS,
    check_version,
    create_body,
    docker_network_view,
    endpoint_config,
    network_matches,
    parse_filters,
    prune_matches,
    split_version,
)
from netd.engine.service import Service
from netd.ops.unixsock import start_private

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATUS_OF_CODE = {"invalid": 400, "not_found": 404, "conflict": 409, "unsupported": 400, "state": 503}
HEADERS = {"Api-Version": API_VERSION, "Docker-Experimental": "false", "Ostype": "linux", "Server": "netd"}


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=HEADERS)


@web.middleware
async def docker_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        version, _ = split_version(request.path)
        if version is not None:
            check_version(version)
        response = await handler(request)
    except NetdError as e:
        status = STATUS_OF_CODE.get(e.code, 500)
        if e.code == "conflict" and (request.method == "DELETE" or request.path.endswith("/connect")):
            status = 403  # as Docker: "has active endpoints", "already exists in network"
        log.info("docker_api_error", method=request.method, path=request.path, code=e.code, error=e.message)
        return _message(status, e.message)
    except web.HTTPException as e:
        if e.status == 404:
            return _message(404, "page not found")
        return _message(e.status, e.reason or "")
    except Exception:
        log.exception("docker_api_crashed", method=request.method, path=request.path)
        return _message(500, "internal error; see the netd log (journalctl -u netd)")
    response.headers.update(HEADERS)
    return response


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class DockerApi:
    def __init__(self, service: Service) -> None:
        self.service = service

    # -- lookups -----------------------------------------------------------------------------------------------

    def network(self, ident: str) -> Any:
        st = self.service.state
        if ident in st.networks:
            return st.networks[ident]
        hits = [n for n in st.networks.values() if n.id.startswith(ident)] if ident else []
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise NotFoundError(f"network {ident} is ambiguous ({len(hits)} matches); give more of its id")
        raise NotFoundError(f"network {ident} not found")

    def target(self, container: Any) -> dict[str, str]:
        """``Container``: a netd netns name, else a CNI container's id or unique id prefix (its namespace)."""
        if not isinstance(container, str) or not container:
            raise InvalidError("Container is required: a netd namespace name or a container id")
        st = self.service.state
        if container in st.netns:
            return {"Netns": container}
        paths = {
            ep.netns_path
            for ep in st.endpoints.values()
            if ep.container_id and ep.netns_path and ep.container_id.startswith(container)
        }
        if len(paths) == 1:
            return {"NetnsPath": paths.pop()}
        raise NotFoundError(
            f"No such container: {container} (give a netd namespace, see netd-ctl netns ls, or a container id)"
        )

    # -- routes ------------------------------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(
            text="OK", headers={"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
        )

    async def version(self, request: web.Request) -> web.Response:
        uname = platform.uname()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine)
        version = f"netd-{__version__}"
        return _json(
            {
                "Platform": {"Name": "netd"},
                "Components": [{"Name": "netd", "Version": version, "Details": {"ApiVersion": API_VERSION}}],
                "Version": version,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": uname.release,
                "GitCommit": "",
                "GoVersion": "",
                "BuildTime": "",
            }
        )

    async def list_networks(self, request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"), LIST_FILTERS)
        st = self.service.state
        out = [
            docker_network_view(n, st)
            for n in sorted(st.networks.values(), key=lambda n: n.name)
            if network_matches(n, len(st.endpoints_of(n.id)), filters)
        ]
        return _json(out)

    async def create_network(self, request: web.Request) -> web.Response:
        net = await self.service.create_network(create_body(await _body(request)))
        return _json({"Id": net.id, "Warning": ""}, status=201)

    async def inspect_network(self, request: web.Request) -> web.Response:
        return _json(docker_network_view(self.network(request.match_info["id"]), self.service.state))

    async def remove_network(self, request: web.Request) -> web.Response:
        await self.service.remove_network(self.network(request.match_info["id"]).name)
        return web.Response(status=204)

    async def connect(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise InvalidError("the request body must be a JSON object (NetworkConnectRequest)", field="body")
        net = self.network(request.match_info["id"])
        req = {**self.target(body.get("Container")), "EndpointConfig": endpoint_config(body.get("EndpointConfig"))}
        await self.service.connect(net.name, req)
        return web.Response(status=200)

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise InvalidError("the request body must be a JSON object (NetworkDisconnectRequest)", field="body")
        net = self.network(request.match_info["id"])
        await self.service.disconnect(net.name, self.target(body.get("Container")))
        return web.Response(status=200)

    async def prune(self, request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
        now = datetime.now(UTC)
        st = self.service.state
        doomed = [
            n.name
            for n in sorted(st.networks.values(), key=lambda n: n.name)
            if not n.is_default and not st.endpoints_of(n.id) and prune_matches(n, filters, now)
        ]
        deleted = []
        for name in doomed:
            with contextlib.suppress(NotFoundError, ConflictError):  # connected or removed meanwhile: keep going
                await self.service.remove_network(name)
                deleted.append(name)
        return _json({"NetworksDeleted": deleted})


def build_docker_app(service: Service) -> web.Application:
    api = DockerApi(service)
    app = web.Application(middlewares=[docker_middleware], client_max_size=1 << 20)
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/_ping", api.ping),
        ("GET", "/version", api.version),
        ("GET", "/networks", api.list_networks),
        ("POST", "/networks/create", api.create_network),
        ("POST", "/networks/prune", api.prune),
        ("GET", "/networks/{id}", api.inspect_network),
        ("DELETE", "/networks/{id}", api.remove_network),
        ("POST", "/networks/{id}/connect", api.connect),
        ("POST", "/networks/{id}/disconnect", api.disconnect),
    ]
    for method, path, handler in routes:
        for prefix in ("", r"/{api_version:v\d+\.\d+}"):
            app.router.add_route(method, prefix + path, handler)
    return app


async def serve_docker_api(service: Service, path: Path, mode: int, group: str | None) -> web.AppRunner:
    """Listen on ``path`` as the API socket does: private from its first moment, then ``group`` and ``mode``."""
    runner = web.AppRunner(build_docker_app(service), access_log=None)
    await runner.setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    await start_private(web.UnixSite(runner, str(path)), path, mode, group)
    log.info("docker_api_listening", socket=str(path))
    return runner
