"""``/v1/services`` (service create / ls / inspect / rm), for the daemon in cluster mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from netd.core.errors import InvalidError
from netd.core.strict import parse_json

from .services import ServiceOps, service_view

Json = Callable[..., web.Response]


async def _body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.RequestPayloadError as e:
        raise InvalidError(f"request body could not be read: {e}", field="body") from e
    return parse_json(raw) if raw else {}


def add_service_routes(routes: web.RouteTableDef, ops: Callable[[], ServiceOps], json: Json) -> None:
    @routes.get("/v1/services")
    async def list_services(request: web.Request) -> web.Response:
        return json(await ops().list())

    @routes.post("/v1/services")
    async def create_service(request: web.Request) -> web.Response:
        o = ops()
        rec = await o.create(await _body(request))
        nets, alive, _tasks = await o.context()
        return json(service_view(rec, nets, alive, []), status=201)

    @routes.get("/v1/services/{name}")
    async def inspect_service(request: web.Request) -> web.Response:
        return json(await ops().inspect(request.match_info["name"]))

    @routes.delete("/v1/services/{name}")
    async def remove_service(request: web.Request) -> web.Response:
        await ops().remove(request.match_info["name"])
        return json({"Removed": request.match_info["name"]})
