"""Where the extract step of the pipeline runs: ``cluster="local"`` or ``cluster="ray"``.

(Not to be confused with ``engine``, which says what runs the network: onnxruntime or torch.)
``"local"`` (the default) runs :func:`fidkit.extraction.extract` in this process, with decoding in worker
processes of this machine. ``"ray"`` (:mod:`fidkit.cluster.ray`, the optional extra
``pip install "fidkit[ray]"``) splits a source into contiguous shards, computes partial statistics of
each shard on the actors of a Ray cluster and merges them exactly on the driver.

Both give the same statistics (equal N, mu and sigma to rounding), under the same cache key: where they
were computed is not part of what the statistics are, only of how they were computed.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

from fidkit.errors import InputError

__all__ = ["CLUSTERS", "check_cluster", "cluster_session"]

#: What ``compute_stats(..., cluster=...)`` accepts.
CLUSTERS = ("local", "ray")


def check_cluster(cluster: object, ray_address: object) -> str:
    """Return `cluster` checked; refuse a `ray_address` without ``cluster="ray"`` (it would be ignored)."""
    if cluster not in CLUSTERS:
        raise InputError(f"cluster must be one of {', '.join(map(repr, CLUSTERS))}, not {cluster!r}")
    if ray_address is not None:
        if cluster != "ray":
            raise InputError(f"ray_address={ray_address!r} is only used with cluster='ray'; pass cluster='ray' too")
        if not isinstance(ray_address, str) or not ray_address:
            raise InputError(f"ray_address must be a non-empty string such as 'ray://head:10001', not {ray_address!r}")
    return str(cluster)


def cluster_session(cluster: str) -> AbstractContextManager[None]:
    """A span in which several sides share the cluster's set-up.

    With ``"ray"``, a local Ray instance that the first side starts stays up until the span ends (one
    start for both sides of a comparison, not two). Nothing starts unless a side needs the network.
    """
    if cluster == "ray":
        from fidkit.cluster.ray import shared_session

        return shared_session()
    return contextlib.nullcontext()
