"""Cluster mode of the daemon: overlay networks across nodes (loaded only when ``[cluster]`` is configured).

- ``mirror``: pure translations between the cluster's records and this node's desired state and kernel specs
- ``overlay``: the overlay changes the API asks for (create, rm, connect, disconnect), etcd first, then local
- ``publish``: this node's endpoints in etcd made equal to its state file (start, re-registration, reconnect)
- ``node``: the lifecycle, the reconciler's overlay observer (reads the cache, never etcd), the watch ->
  scoped reconcile worker, status and metrics
- ``api``: ``/v1/nodes``

The single-host daemon imports none of this (nor ``netd.cluster``, aetcd or grpc).
"""
