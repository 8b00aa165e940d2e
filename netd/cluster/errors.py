"""Errors of the cluster layer (all :class:`netd.core.errors.NetdError`, so the API and CLI show them as usual)."""

from __future__ import annotations

from netd.core.errors import NetdError


class ClusterUnavailableError(NetdError):
    """etcd could not be reached (refused, timed out, no leader, TLS failure) within the request timeout.

    Existing endpoints keep working; only changes that need the cluster store are refused.  The API maps the
    code to HTTP 503."""

    code = "cluster_unavailable"


class ClusterRefusedError(NetdError):
    """etcd answered but refused the request (permission denied, request too large, ...): not a connection
    problem, so it is not retried."""

    code = "cluster"


class LeaseLostError(NetdError):
    """The lease a key was to be attached to no longer exists (expired or etcd lost its data)."""

    code = "cluster_lease_lost"
