"""Registry of checks by dotted name.

Built-in checks are listed here by the import path of their class and imported
only when used, so a scan that does not run an embedding check never imports
torch. A policy may also name a user's own check by its import path
(``"mypkg.checks:MyCheck"``); it must subclass :class:`integrity.checks.base.Check`.

Adding a built-in check is one module (the class, with its ``name``, options and
``report_section``) plus one line in :data:`BUILTIN`.
"""
from __future__ import annotations

import importlib
from typing import Iterable

from integrity.checks.base import Check

BUILTIN: dict[str, str] = {
    "dedup.exact": "integrity.checks.dedup_exact:ExactDedup",
    "dedup.near": "integrity.checks.dedup_near:NearDedup",
    "dedup.span": "integrity.checks.dedup_span:SpanDedup",
    "dedup.semantic": "integrity.checks.dedup_semantic:SemanticDedup",
    "memorization.risk": "integrity.checks.memorization_risk:MemorizationRisk",
    "contamination.eval": "integrity.checks.contamination_eval:ContaminationEval",
    "privacy.pii": "integrity.checks.privacy_pii:PiiCheck",
    "privacy.secret": "integrity.checks.privacy_secret:SecretCheck",
    "distribution.drift": "integrity.checks.distribution_drift:DriftCheck",
    "synthetic.text": "integrity.checks.synthetic_text:SyntheticTextCheck",
    "provenance.changed": "integrity.checks.provenance_changed:ProvenanceCheck",
    "provenance.duplicate_id": "integrity.checks.provenance_duplicate_id:DuplicateIdCheck",
    "image.decode": "integrity.checks.image_decode:ImageDecodeCheck",
    "dedup.image": "integrity.checks.dedup_image:ImageDedup",
    "poison.caption_mismatch": "integrity.checks.poison_caption_mismatch:CaptionMismatch",
    "poison.trigger": "integrity.checks.poison_trigger:PoisonTriggerCheck",
    "poison.target": "integrity.checks.poison_target:PoisonTargetCheck",
    "poison.unicode": "integrity.checks.poison_unicode:UnicodeCheck",
    "poison.injection": "integrity.checks.poison_injection:InjectionCheck",
    "poison.outlier": "integrity.checks.poison_outlier:OutlierCheck",
    "poison.patch": "integrity.checks.poison_patch:PatchCheck",
    "poison.caption_trigger": "integrity.checks.poison_caption_trigger:CaptionTriggerCheck",
    "synthetic.image": "integrity.checks.synthetic_image:SyntheticImage",
}

_extra: dict[str, type[Check]] = {}


class UnknownCheckError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


def register(cls: type[Check]) -> type[Check]:
    """Class decorator registering a check under ``cls.name`` (for plug-ins and tests)."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _extra[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every registered check."""
    return sorted(set(BUILTIN) | set(_extra))


def _import(path: str) -> type[Check]:
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Check)):
        raise TypeError(f"{path} is not a Check subclass")
    return cls


def get(name: str) -> type[Check]:
    """The check class registered as ``name`` (or importable as ``module:Class``)."""
    if name in _extra:
        return _extra[name]
    if name in BUILTIN:
        return _import(BUILTIN[name])
    if ":" in name:
        try:
            return _import(name)
        except (ImportError, AttributeError, TypeError) as e:
            raise UnknownCheckError(f"cannot load check {name!r}: {e}") from e
    raise UnknownCheckError(f"unknown check {name!r}; available: {', '.join(available())}")


def check_known(name: str) -> None:
    """Raise :class:`UnknownCheckError` unless ``name`` is a check; a built-in or registered
    name is known without importing its module (a plug-in's import path is imported)."""
    if name not in _extra and name not in BUILTIN:
        get(name)


def is_shipped(name: str) -> bool:
    """Whether ``name`` is the built-in check (not a class registered under its name)."""
    return name in BUILTIN and name not in _extra


def find(name: str, paths: Iterable[str] = ()) -> type[Check] | None:
    """The class of the check whose findings carry ``name``, or ``None`` when no importable one does.

    ``paths`` are the checks a scan was asked to run (its summary's ``checks``): a plug-in named
    there by import path writes its findings under its class's ``name``, which this matches.
    A class that no longer imports (an old run dir, a plug-in not installed here) gives ``None``.
    """
    candidates = [name] + [p for p in paths if ":" in p and p != name]
    for candidate in candidates:
        try:
            cls = get(candidate)
        except (UnknownCheckError, ImportError, AttributeError, TypeError):
            continue
        if candidate == name or cls.name == name:
            return cls
    return None
