"""Typed options of a check: one pydantic model per check holds every option's
default, its allowed values and a one-line description.

A check declares them as a nested class::

    class NearDedup(Check):
        class Options(CheckOptions):
            threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity that counts as a duplicate")

The engine validates a policy's ``options`` through the model (unknown keys,
types and ranges are refused with the key named), the check reads the result as
``self.options`` (a plain dict) or ``self.settings`` (the typed model), and
``integrity policy default`` prints the defaults with their descriptions. A
plug-in check that still declares a plain ``default_options`` dict gets a model
built from it (every value accepted as is, unknown keys refused).
"""
from __future__ import annotations

import keyword
import typing
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model


#: a finding severity, as an option's type
Severity = Literal["info", "warn", "critical"]


class CheckConfigError(ValueError):
    """A check was given an option it does not know or a value it cannot use.

    ``problems`` lists ``(key, what is wrong)`` pairs when the options model found
    them (the key is dotted for nested values, empty for a rule over several keys);
    it is empty for errors a check raises itself with one message.
    """

    def __init__(self, message: str, *, check: str = "", problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.check = check
        self.problems = list(problems or [])


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's type admits True/False (bool itself, Any, or a union holding either)."""
    if annotation is bool or annotation is Any:
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _accepts_bool(args[0])
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_accepts_bool(a) for a in args)
    return False


class CheckOptions(BaseModel):
    """Base of every check's options model: unknown keys are errors (and, in
    :meth:`parse`, a YAML ``true``/``false`` is not taken for the number 1/0)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True,
                              populate_by_name=True)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option's default, in declaration order, keyed as a policy writes it."""
        return {(f.alias or name): f.get_default(call_default_factory=True) for name, f in cls.model_fields.items()}

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        """Every option's one-line description, keyed as a policy writes it."""
        return {(f.alias or name): (f.description or "") for name, f in cls.model_fields.items()}

    @classmethod
    def parse(cls, check: str, options: Mapping[str, Any] | None) -> "CheckOptions":
        """Validate ``options`` (a policy's keys, the rest defaulted); raises
        :class:`CheckConfigError` naming the check, each bad key and what it allows."""
        data = dict(options or {})
        # a YAML true/false is not silently taken for the number 1/0 (pydantic's lax mode would)
        problems = [(key, f"must be a number, not {str(data.pop(key)).lower()}") for key in list(data)
                    if isinstance(data[key], bool) and key in cls.model_fields
                    and not _accepts_bool(cls.model_fields[key].annotation)]
        try:
            model = cls.model_validate(data)
            if not problems:
                return model
        except ValidationError as e:
            problems += _problems(e, cls)
        lines = "; ".join(f"option {k!r}: {p}" if k else p for k, p in problems)
        raise CheckConfigError(f"check {check!r}: {lines}", check=check, problems=problems)

    def as_dict(self) -> dict[str, Any]:
        """The options as the plain dict a check reads (``self.options``)."""
        return {(f.alias or name): getattr(self, name) for name, f in type(self).model_fields.items()}


_PLAIN = {
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}",
    "literal_error": "must be {expected}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "none_required": "must be null",
}


def _problems(error: ValidationError, model: type[CheckOptions]) -> list[tuple[str, str]]:
    """``(key, what is wrong)`` per bad key; the alternatives of a union are joined with 'or'."""
    by_key: dict[str, list[str]] = {}
    got: dict[str, Any] = {}
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        # pydantic names the union member it tried ("int", "literal['auto']", "function-after[...]"): drop it
        parts = [p for p in loc if not (p in {"int", "float", "str", "bool", "list", "dict", "none"}
                                        or p.startswith(("literal[", "function-", "list[", "dict[", "nullable[")))]
        key = ".".join(parts)
        etype = err["type"]
        if etype == "extra_forbidden":
            text = f"unknown option; known options are {sorted(model.defaults())}"
        elif etype == "value_error":
            text = str(err.get("ctx", {}).get("error", err["msg"]))
            if not key and ": " in text and text.split(": ", 1)[0] in model.defaults():
                key, text = text.split(": ", 1)
        else:
            ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in err.get("ctx", {}).items()}
            text = _PLAIN.get(etype, err["msg"][:1].lower() + err["msg"][1:]).format(**ctx)
        if text not in by_key.setdefault(key, []):
            by_key[key].append(text)
        if etype not in ("extra_forbidden", "value_error", "missing"):
            got[key] = err.get("input")
    return [(k, " or ".join(v) + (f" (got {_short(got[k])})" if k in got else "")) for k, v in by_key.items()]


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a bad value, cut to ``limit`` characters (a policy may hold a long list)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def model_from_dict(owner: str, defaults: Mapping[str, Any]) -> type[CheckOptions]:
    """An options model for a check that declares a plain ``default_options`` dict
    (plug-ins written before options models): every key keeps its default and
    accepts any value; unknown keys are refused."""
    fields: dict[str, Any] = {}
    for i, (key, value) in enumerate(defaults.items()):
        name = key
        if (not key.isidentifier() or keyword.iskeyword(key) or key.startswith("_")
                or hasattr(BaseModel, key) or key in fields):
            name = f"option_{i}"  # a key that cannot be a field name: keep it as the alias
        fields[name] = (Any, Field(default=value, alias=key if name != key else None,
                                   description=""))
    return create_model(f"{owner}Options", __base__=CheckOptions, **fields)
