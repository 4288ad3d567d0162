"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides, with validation.

A method's configuration is a dataclass whose fields carry their types (``int``, ``float``,
``str``, ``bool``, ``Literal[...]`` for a fixed set of choices, ``dict`` for model overrides).
:func:`build` layers the dataclass defaults, a preset from the protocol's YAML file and the
command line's ``key=value`` overrides, checking every key and value; any problem is a one-line
:class:`~rsrp_sim.errors.UserError` naming the key and what is allowed.

Two checks hold for every configuration (and every model file, :mod:`rsrp_sim.core.models`): a
float must be finite (``.inf`` / ``.nan`` are refused, :func:`coerce`), and a key named like a
quantity that is positive by nature (:func:`must_be_positive`: learning rates ``lr``, noise scales
``sigma``, time constants ``tau*``, time steps ``dt``, gains ``*gain``) must be > 0.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Literal

import yaml

from .errors import UserError, unknown

__all__ = ["MODEL_PREFIX", "parse_overrides", "coerce", "POSITIVE", "must_be_positive", "check_positive", "field_types",
           "apply", "build", "to_dict", "describe", "ConfigBase", "compose"]

MODEL_PREFIX = "model."
_EXPONENT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=0.1", "model.n_neurons=64"]`` -> ``{"lr": 0.1, "model": {"n_neurons": 64}}``.

    Values are read as YAML scalars (``0.1`` float, ``64`` int, ``true`` bool, ``adam`` str).
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ":" in raw:
            value = raw.strip()  # YAML 1.1 reads 1:1 as the base-60 number 61; nobody means that
        if isinstance(value, str) and _EXPONENT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if key.startswith(MODEL_PREFIX):
            out.setdefault("model_overrides", {})[key[len(MODEL_PREFIX):]] = value
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float only)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            # key=1:1 or key=01 on the command line reads as a YAML number (61, 1): map it back
            match = [c for c in choices if isinstance(c, str) and not isinstance(value, (str, bool))
                     and yaml.safe_load(c) == value]
            if len(match) == 1:
                return match[0]
            raise unknown(f"value for {key}", value, choices)
        return value
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(key, value, args[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise UserError(f"{key} must be a finite number, got {value}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is list or origin is list:  # e.g. model.hidden=[128,64]
        if isinstance(value, list):
            return list(value)
    else:  # pragma: no cover - only the types above are used in configs
        return value
    raise UserError(f"{key} must be {_type_name(tp)}, got {value!r}")


#: names of keys (the last part of a dotted name) whose values must be > 0 wherever they appear
POSITIVE = re.compile(r"^(lr|sigma|dt|tau.*|.*gain)$", re.IGNORECASE)


def must_be_positive(key: str) -> bool:
    """Whether the key ``key`` (``lr``, ``model.tau_syn``, ``model.gain.EE`` ...) must be > 0: its last
    part (or, for a group such as ``gain.EE``, the group's name) matches :data:`POSITIVE`."""
    parts = [p for p in key.split(".") if p]
    return any(POSITIVE.match(p) for p in parts[-2:] if p != "model")


def check_positive(key: str, value: Any) -> None:
    """A one-line error when ``key`` must be > 0 (:func:`must_be_positive`) and ``value`` is not."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and must_be_positive(key) \
            and not value > 0:
        raise UserError(f"{key} must be > 0, got {value}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply(cfg: Any, values: dict[str, Any], source: str = "override") -> Any:
    """A copy of dataclass ``cfg`` with ``values`` checked and applied."""
    types = field_types(type(cfg))
    changes = {}
    for key, value in values.items():
        if key not in types:
            raise unknown(f"key in {source}", key, sorted(types))
        if key == "model_overrides":
            merged = dict(getattr(cfg, key) or {})
            merged.update(coerce(key, value, dict))
            changes[key] = merged
        else:
            changes[key] = coerce(key, value, types[key])
    return dataclasses.replace(cfg, **changes)


def build(cls: type, *layers: tuple[str, dict[str, Any]]) -> Any:
    """Defaults of ``cls``, then each ``(source, values)`` layer in order; then ``validate()``."""
    cfg = cls()
    for source, values in layers:
        cfg = apply(cfg, values or {}, source)
    for key in field_types(cls):
        check_positive(key, getattr(cfg, key))
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def describe(cls: type) -> list[str]:
    """``key (type, default)`` lines for help output."""
    out = []
    defaults = cls()
    for name, tp in field_types(cls).items():
        out.append(f"{name} ({_type_name(tp)}) = {getattr(defaults, name)!r}")
    return out


class ConfigBase:
    """Root of every configuration dataclass: :meth:`validate` is cooperative (each class checks
    its own keys and calls ``super().validate()``), so composed configurations check them all."""

    def validate(self) -> None:
        pass

    def require(self, condition: bool, message: str) -> None:
        """Raise a one-line :class:`UserError` with ``message`` unless ``condition``."""
        if not condition:
            raise UserError(message)

    def require_at_least(self, minimum: Any, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            self.require(value >= minimum, f"{key} must be at least {minimum}, got {value}")


def compose(name: str, *bases: type) -> type:
    """A configuration dataclass with every field (and every ``validate``) of ``bases``.

    The first base wins where two define the same key (Python's method resolution order), so
    a method's own defaults are given before the shared ones.
    """
    return dataclasses.make_dataclass(name, [], bases=tuple(bases))
