"""The scan engine: plain-Python stages that any orchestrator can run.

A :class:`~integrity.engine.spec.ScanSpec` holds what a scan needs (source, mapping, policy,
resolved checks). :func:`integrity.engine.pipeline.execute` runs the stages once, in order,
given :class:`~integrity.engine.pipeline.ScanHooks` (how shards are mapped and stages run):
:func:`~integrity.engine.pipeline.run_scan` supplies threads (notebooks, tests, the inline
runner) and ``flows/scan.py`` supplies Prefect's mapping, tasks, artifacts and events.
The stages, in :mod:`integrity.engine.pipeline`:

1. :func:`~integrity.engine.pipeline.list_stage` – list the source's shards;
2. :func:`integrity.engine.shard.scan_shard` – one shard: read, per-shard checks, cache;
3. :func:`~integrity.engine.pipeline.corpus_stage` – the corpus checks, joins over every
   shard's features (:func:`integrity.engine.corpus.run_corpus_checks`);
4. :func:`~integrity.engine.pipeline.policy_stage` – severities and shard verdicts from the
   policy (:func:`integrity.engine.verdict.decide`);
5. :func:`~integrity.engine.pipeline.quarantine_stage` – quarantine of the shards the policy
   sends there (:mod:`integrity.engine.quarantine`);
6. :func:`~integrity.engine.pipeline.output_stage` – the run directory of the output contract
   (:mod:`integrity.engine.outputs`).
"""
