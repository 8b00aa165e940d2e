"""Multi-host control plane: etcd holds what all nodes share; each node keeps a watched cache of it.

Imported only when ``[cluster]`` is configured (the single-host daemon never loads aetcd/grpc).  Nothing here
knows HTTP or the kernel: the daemon asks for changes (membership, IPAM) and its reconciler reads the cache.

- ``keys``: the key layout under ``[cluster] key_prefix`` (pure)
- ``records``: the JSON value of each key, as pydantic models (pure)
- ``store``: the etcd client wrapper (failover over endpoints, TLS, bounded timeouts, one error for "down")
- ``membership``: this node under a lease, kept alive, re-registered; ``node ls`` / ``node rm``
- ``ipam``: cluster-wide addresses, VNIs and overlay subnets through create-if-absent transactions
- ``cache``: list + watch -> local view, resynced after every watch failure
"""
