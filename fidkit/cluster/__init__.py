"""Where the extract step of the pipeline runs when it is not this process: ``cluster="ray"``.

(Not to be confused with ``engine``, which says what runs the network: onnxruntime or torch.)
``cluster="local"`` (the default) runs :func:`fidkit.extraction.extract` in this process, with decoding in
worker processes of this machine. ``"ray"`` (:mod:`fidkit.cluster.ray`, the optional extra
``pip install "fidkit[ray]"``) splits a source into contiguous shards, computes partial statistics (or
feature rows) of each shard on the actors of a Ray cluster and merges them exactly on the driver.

Both give the same statistics (equal N, mu and sigma to rounding), under the same cache key: where they
were computed is not part of what the statistics are, only of how they were computed. The cluster path
receives what it needs (the source, the :class:`~fidkit.options.RunOptions`, the extractor's identity) and
calls nothing above it.
"""
