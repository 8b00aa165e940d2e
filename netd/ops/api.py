"""Operator endpoints of the API: ``GET /v1/plan``, ``/v1/check``, ``/v1/doctor``, ``POST /v1/reload``, and
request timing.

``plan`` and ``check`` are one dry run of the reconciler (observe + plan, nothing applied); ``doctor`` runs the
host checks of :mod:`netd.ops.doctor`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Observe = Callable[[str, str, int, float], None]
JsonFn = Callable[..., web.Response]


@dataclass
class Ops:
    dry_run: Callable[[], Awaitable[list[dict[str, str]]]]
    doctor: Callable[[], Awaitable[dict[str, Any]]]
    observe: Observe | None = None  # API metrics: (route, method, status, seconds)
    inflight: Any = None  # netd.ops.progress.InFlight: requests being served, for the watchdog's progress check
    reload: Callable[[], Awaitable[dict[str, Any]]] | None = None  # re-read the config, answer the outcome


def add_ops_routes(routes: web.RouteTableDef, ops: Ops, to_json: JsonFn) -> None:
    @routes.get("/v1/plan")
    async def get_plan(request: web.Request) -> web.Response:
        return to_json({"actions": await ops.dry_run()})

    @routes.get("/v1/check")
    async def get_check(request: web.Request) -> web.Response:
        actions = await ops.dry_run()
        return to_json({"in_sync": not actions, "differences": actions})

    @routes.get("/v1/doctor")
    async def get_doctor(request: web.Request) -> web.Response:
        return to_json(await ops.doctor())

    reload = ops.reload
    if reload is not None:

        @routes.post("/v1/reload")
        async def post_reload(request: web.Request) -> web.Response:
            return to_json(await reload())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def timed(observe: Observe) -> Any:
    """aiohttp middleware: count and time requests by route template (``/v1/networks/{name}``), not raw paths."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            observe(route, request.method, status, time.perf_counter() - t0)

    return middleware
