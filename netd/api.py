"""HTTP/JSON API on the Unix socket (aiohttp).  Errors are mapped to HTTP here, in one place."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import hdrs, web

from netd.core import predefined
from netd.core.errors import InvalidError, NetdError, StorageError
from netd.core.strict import parse_json
from netd.engine.service import Service
from netd.ops.api import Ops, add_ops_routes, timed
from netd.views import endpoint_view, netns_view, network_view

log = structlog.get_logger()

STATUS_OF_CODE = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "unsupported": 501,
    "kernel": 500,
    "firewall": 500,
    "state": 503,
    "cluster_unavailable": 503,
    "cluster_lease_lost": 503,
    "cluster": 502,
    "storage": 503,  # read-only or failing disk; a full one (or over quota) is 507, see error_middleware
    "internal": 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StatusFn = Callable[[], dict[str, Any]]


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    err: dict[str, str] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return web.json_response({"error": err}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NetdError as e:
        status = STATUS_OF_CODE.get(e.code, 500)
        if isinstance(e, StorageError) and e.no_space:
            status = 507  # Insufficient Storage
        log.info("api_error", method=request.method, path=request.path, code=e.code, error=e.message)
        return _error(status, e.code, e.message, e.field)
    except web.HTTPException as e:
        return _error(e.status, "not_found" if e.status == 404 else "invalid", e.reason or "")
    except Exception:
        log.exception("api_crashed", method=request.method, path=request.path)
        return _error(500, "internal", "internal error; see the netd log (journalctl -u netd)")


async def _body(request: web.Request) -> Any:
    """The JSON body, parsed strictly (:func:`netd.core.strict.parse_json`); an uncompressed body only."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise InvalidError(
            f"Content-Encoding {encoding!r} is not accepted: send the JSON body uncompressed",
            field="Content-Encoding",
        )
    try:
        raw = await request.read()
    except web.RequestPayloadError as e:  # a body that does not match its framing (chunks, length)
        raise InvalidError(f"request body could not be read: {e}", field="body") from e
    if not raw:
        return {}
    return parse_json(raw)


def _filters_obj(raw: str) -> dict[str, Any]:
    value = parse_json(raw.encode())
    if not isinstance(value, dict):
        raise InvalidError('filters must be a JSON object, e.g. {"driver": ["bridge"]}', field="filters")
    return value


def _flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (``?force=1``); anything but 1/true/0/false is refused, naming it."""
    value = request.query.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", ""):
        raise InvalidError(f"{name}: {value!r} is not a boolean; use {name}=1 or {name}=0", field=name)
    return value in ("1", "true")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


def build_app(
    service: Service,
    status: StatusFn,
    metrics: Callable[[], bytes] | None = None,
    ops: Ops | None = None,
    cluster_routes: Callable[[web.RouteTableDef, Callable[..., web.Response]], None] | None = None,
) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/v1/status")
    async def get_status(request: web.Request) -> web.Response:
        return _json(status())

    @routes.get("/v1/networks")
    async def list_networks(request: web.Request) -> web.Response:
        """Every network, ``host`` and ``none`` included as Docker shows them; ``?filters=`` as Docker's."""
        st = service.state
        raw = request.query.get("filters")
        filters = predefined.parse_filters(_filters_obj(raw)) if raw else {}
        views = [network_view(n, st) for n in st.networks.values()]
        views += [predefined.predefined_view(name) for name in predefined.PREDEFINED if name not in st.networks]
        return _json(sorted((v for v in views if predefined.matches(v, filters)), key=lambda v: v["Name"]))

    @routes.post("/v1/networks/prune")
    async def prune_networks(request: web.Request) -> web.Response:
        return _json({"NetworksDeleted": await service.prune_networks()})

    @routes.post("/v1/networks")
    async def create_network(request: web.Request) -> web.Response:
        net = await service.create_network(await _body(request))
        return _json({"Id": net.id, "Name": net.name, "Warning": ""}, status=201)

    @routes.get("/v1/networks/{name}")
    async def inspect_network(request: web.Request) -> web.Response:
        ref = request.match_info["name"]
        pre = predefined.predefined_by_ref(ref) if ref not in service.state.networks else None
        if pre is not None:
            return _json(predefined.predefined_view(pre))
        return _json(network_view(service.get_network(ref), service.state))

    @routes.delete("/v1/networks/{name}")
    async def remove_network(request: web.Request) -> web.Response:
        force = _flag(request, "force")
        await service.remove_network(request.match_info["name"], force=force)
        return web.Response(status=204)

    @routes.post("/v1/networks/{name}/connect")
    async def connect(request: web.Request) -> web.Response:
        ep = await service.connect(request.match_info["name"], await _body(request))
        net = service.state.network_by_id(ep.network)
        assert net is not None
        return _json(endpoint_view(ep, net), status=201)

    @routes.post("/v1/networks/{name}/disconnect")
    async def disconnect(request: web.Request) -> web.Response:
        await service.disconnect(request.match_info["name"], await _body(request))
        return web.Response(status=204)

    @routes.get("/v1/netns")
    async def list_netns(request: web.Request) -> web.Response:
        st = service.state
        return _json([netns_view(ns, service.kernel.netns_path(ns.name), st) for ns in st.netns.values()])

    @routes.post("/v1/netns")
    async def create_netns(request: web.Request) -> web.Response:
        ns = await service.create_netns(await _body(request))
        return _json(netns_view(ns, service.kernel.netns_path(ns.name), service.state), status=201)

    @routes.get("/v1/netns/{name}")
    async def inspect_netns(request: web.Request) -> web.Response:
        ns = service.get_netns(request.match_info["name"])
        return _json(netns_view(ns, service.kernel.netns_path(ns.name), service.state))

    @routes.delete("/v1/netns")
    async def remove_netns_many(request: web.Request) -> web.Response:
        """``{"Names": [A, B, ...]}`` (or ``?name=A&name=B`` for a few: a request line is limited to 8 KiB): one
        change for all (one group delete of their veths in the kernel)."""
        names = list(request.query.getall("name", []))
        body = await _body(request)
        if not isinstance(body, dict) or set(body) - {"Names"}:
            raise InvalidError('body: expected {"Names": ["A", "B", ...]}', field="Names")
        listed = body.get("Names", [])
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise InvalidError("Names: expected a list of namespace names (strings)", field="Names")
        names += listed
        if not names:
            raise InvalidError(
                'Names: give the namespaces to remove: {"Names": ["A", "B"]} or ?name=A&name=B', field="Names"
            )
        missing = await service.remove_netns_many(names)
        removed = [n for n in dict.fromkeys(names) if n not in missing]
        return _json({"Removed": removed, "Errors": missing})

    @routes.delete("/v1/netns/{name}")
    async def remove_netns(request: web.Request) -> web.Response:
        await service.remove_netns(request.match_info["name"])
        return web.Response(status=204)

    @routes.post("/v1/reconcile")
    async def reconcile(request: web.Request) -> web.Response:
        if await _body(request) != {}:
            raise InvalidError("POST /v1/reconcile takes no body (or {})", field="body")
        errors = await service.reconcile_all()
        rec = status()["reconcile"]
        return _json({"changes": rec["last_changes"], "errors": errors, "reconcile": rec})

    if ops is not None:
        add_ops_routes(routes, ops, _json)

    if cluster_routes is not None:
        cluster_routes(routes, _json)
    else:

        @routes.route("*", "/v1/{kind:nodes|services}{rest:.*}")
        async def no_cluster(request: web.Request) -> web.Response:
            from netd.core.errors import InvalidError

            raise InvalidError(
                f"this netd is single-host: {request.match_info['kind']} exist in cluster mode; add a [cluster] "
                "section with etcd_endpoints to netd.toml and restart netd",
                field="cluster",
            )

    if metrics is not None:
        render = metrics

        @routes.get("/metrics")
        async def get_metrics(request: web.Request) -> web.Response:
            return web.Response(body=render(), content_type="text/plain", charset="utf-8")

    middlewares = [error_middleware]
    if ops is not None and ops.observe is not None:
        middlewares.insert(0, timed(ops.observe))  # outermost: sees the status error_middleware chose
    if ops is not None and ops.inflight is not None:
        middlewares.insert(0, ops.inflight.middleware())  # a request stuck for long stops the watchdog
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app.add_routes(routes)
    return app
