"""The scan engine: plain-Python stages that any orchestrator can run.

``flows/`` runs these stages as Prefect tasks; :func:`integrity.engine.pipeline.run_scan`
runs them in-process (notebooks, tests). A :class:`spec.ScanSpec` holds what a scan
needs (source, mapping, policy, resolved checks). The stages, in
:mod:`integrity.engine.pipeline`:

1. :func:`pipeline.list_stage` – list the source's shards;
2. :func:`shard.scan_shard` – one shard: read, per-shard checks, cache;
3. :func:`corpus.run_corpus_checks` – joins over every shard's features;
4. :func:`verdict.decide` – severities and shard verdicts from the policy;
5. quarantine of the shards the policy sends there (:mod:`integrity.engine.quarantine`);
6. :func:`pipeline.output_stage` – the run directory of the output contract (:mod:`outputs`).
"""
