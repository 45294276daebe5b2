"""The scan engine: plain-Python stages that any orchestrator can run.

``flows/`` runs these stages as Prefect tasks; :func:`integrity.engine.local.run_scan`
runs them in-process (notebooks, tests). The stages are:

1. :func:`spec.plan` – list shards, resolve the checks and the cache key;
2. :func:`shard.scan_shard` – one shard: read, per-shard checks, cache;
3. :func:`corpus.run_corpus_checks` – joins over every shard's features;
4. :func:`verdict.decide` – severities and shard verdicts from the policy;
5. quarantine of the shards the policy sends there (:mod:`integrity.quarantine`);
6. :func:`outputs.write_outputs` – the run directory of the output contract.
"""
