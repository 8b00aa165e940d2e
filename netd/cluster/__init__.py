"""Multi-host control plane: etcd holds what all nodes share; each node keeps a watched cache of it.

Imported only when ``[cluster]`` is configured (the single-host daemon never loads aetcd/grpc).  Nothing here
knows HTTP or the kernel: the daemon asks for changes (membership, IPAM) and its reconciler reads the cache.

- ``keys``: the key layout under ``[cluster] key_prefix`` (pure)
- ``records``: the JSON value of each key, as pydantic models (pure)
- ``store``: the etcd client wrapper (failover over endpoints, TLS, bounded timeouts, one error for "down")
- ``txn``: transaction compares/operations in netd's terms (create-if-absent, range compares)
- ``membership``: this node under a lease, kept alive, re-registered; ``node ls`` / ``node rm``
- ``ipam``: cluster-wide addresses, VNIs and overlay subnets through create-if-absent transactions
- ``networks``: overlay network definitions (create all-or-nothing, remove refused while endpoints exist)
- ``cache``: list + watch -> local view, resynced after every watch failure
- ``node``: all of the above built from ``[cluster]``, for the daemon
"""
