"""Beyond one machine: anomalens on a Ray cluster (``--engine ray``). Optional: ``pip install 'anomalens[ray]'``.

Nothing here is imported by ``import anomalens`` or by any command run without ``--engine ray``; Ray itself is
imported only inside the functions that need it (:mod:`anomalens.distributed.cluster`).

- :mod:`~anomalens.distributed.batch`: score image archives in an actor pool, resumable, exactly once.
- :mod:`~anomalens.distributed.training`: PatchCore's memory bank from coresets of blocks built on the workers.
- :mod:`~anomalens.distributed.many`: one model per category, one analysis per video, as parallel Ray tasks.
- :mod:`~anomalens.distributed.local_cluster`: a throwaway cluster of one-CPU nodes on 127.0.0.1 (tests, benchmarks).

>>> from anomalens.distributed.batch import predict_images_on_ray                       # doctest: +SKIP
>>> predict_images_on_ray("results/bottle_run", ["archive/"], "scored/", address="auto")  # doctest: +SKIP
"""
