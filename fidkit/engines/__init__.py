"""Where the extract step of the pipeline runs.

``"local"`` (the default) runs :func:`fidkit.pipeline.extract` in this process, with decoding in worker
processes of this machine. ``"ray"`` (:mod:`fidkit.engines.ray`, the optional extra
``pip install "fidkit[ray]"``) splits a source into contiguous shards, computes partial statistics of
each shard on the actors of a Ray cluster and merges them exactly on the driver.

Both engines give the same statistics (equal N, mu and sigma to rounding), under the same cache key:
the engine is not part of what the statistics are, only of how they were computed.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

from fidkit.errors import InputError

__all__ = ["ENGINES", "check_engine", "engine_session"]

#: The engines ``compute_stats(..., engine=...)`` accepts.
ENGINES = ("local", "ray")


def check_engine(engine: object, ray_address: object) -> str:
    """Return `engine` checked; refuse a `ray_address` given to another engine (it would be ignored)."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(map(repr, ENGINES))}, not {engine!r}")
    if ray_address is not None:
        if engine != "ray":
            raise InputError(f"ray_address={ray_address!r} is only used with engine='ray'; pass engine='ray' too")
        if not isinstance(ray_address, str) or not ray_address:
            raise InputError(f"ray_address must be a non-empty string such as 'ray://head:10001', not {ray_address!r}")
    return str(engine)


def engine_session(engine: str) -> AbstractContextManager[None]:
    """A span in which several sides share the engine's set-up.

    With ``"ray"``, a local Ray instance that the first side starts stays up until the span ends (one
    start for both sides of a comparison, not two). Nothing starts unless a side needs the network.
    """
    if engine == "ray":
        from fidkit.engines.ray import shared_session

        return shared_session()
    return contextlib.nullcontext()
