"""Classification networks whose connections are Bernoulli masks (see :ref:`science-models`), and their real twins.

A :class:`NetSpec` (built from ``models/mlp_*.yaml`` / ``cnn_*.yaml`` and an E/I preset) fixes the
architecture.  The RSRP networks have one {0,1} mask per layer; :meth:`NetSpec.mask_weights` turns
masks into the effective weights the layer types prescribe, with their fixed scales:

``signed``        w = +1 where K else -1, scale 1/sqrt(fan_in)
``binary``        w = K in {0, 1}, scale 1/sqrt(fan_in)
``signed_input``  the input doubled to [x, -x] times a {0,1} mask of 2*fan_in rows, scale 1/sqrt(2 fan_in)
                  (computed as x @ (K_top - K_bottom))
``ei(q)``         the first round(q*fan_in) presynaptic units +1, the others -q/(1-q); {0,1} mask,
                  scale 1/sqrt(fan_in)

:func:`forward` then runs ``weights -> logits`` for either these weights or real-valued ones (the
backprop baseline uses the same function with learned real weights times the same fixed scales).
MLP: hidden activation ``hidden_gain * relu``, linear logits.  CNN: VALID 3x3 convolutions (kernels
+-1 for RSRP), ReLU and 2x2 max-pool after each, then the dense read-out.
"""
from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from ...infra.errors import UserError, unknown
from ...core.models import available, load

LAYER_KINDS = ("signed", "binary", "signed_input", "ei")
EI_PRESETS = ("none", "1:1", "1:1_input", "3:1", "2:1", "01")
_EI_RE = re.compile(r"^ei\(\s*([0-9.]+)\s*(?:/\s*([0-9.]+)\s*)?\)$")


def parse_layer(text: str) -> tuple[str, float]:
    """``"signed"`` -> ("signed", 0.0); ``"ei(0.75)"`` or ``"ei(3/4)"`` -> ("ei", 0.75)."""
    t = str(text).strip()
    if t in ("signed", "binary", "signed_input"):
        return t, 0.0
    m = _EI_RE.match(t)
    if m:
        q = float(Fraction(m.group(1)) / Fraction(m.group(2) or 1))
        if not 0.0 < q < 1.0:
            raise UserError(f"layer type {t}: the excitatory fraction q must be in (0, 1)")
        return "ei", q
    raise UserError(f"unknown layer type {t!r}; allowed: signed, binary, signed_input, ei(q) with 0 < q < 1")


def ei_signs(fan_in: int, q: float) -> np.ndarray:
    """Presynaptic signs of an ei(q) layer: round(q*fan_in) ones, then -q/(1-q)."""
    n_exc = int(round(q * fan_in))
    s = np.full(fan_in, -q / (1.0 - q), dtype=np.float32)
    s[:n_exc] = 1.0
    return s


@dataclasses.dataclass(frozen=True)
class NetSpec:
    kind: str  # "mlp" or "cnn"
    in_shape: tuple[int, ...]  # (H, W, C)
    n_classes: int
    dense: tuple[tuple[str, float], ...]  # layer type of every dense layer, input side first
    dense_sizes: tuple[int, ...]  # output sizes of the dense layers (last = n_classes)
    hidden_gain: float = 2.0
    channels: tuple[int, ...] = ()
    kernel: int = 3
    stride: int = 1
    pool: int = 2
    conv_scale: str = "fan_in"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, net: str, dataset: str, in_shape, n_classes: int, ei: str = "none",
                   overrides: dict | None = None) -> NetSpec:
        name = f"{net}_{dataset}"
        if name not in available() and net in available():
            name = net  # models/<net>.yaml: the architecture for data sets without one of their own
        if name not in available():
            have = [m for m in available() if m.startswith(("mlp", "cnn_"))]
            raise UserError(f"no {net} model for data set {dataset} (models/{name}.yaml); available: "
                            f"{', '.join(have)}")
        m = load(name, overrides)
        if ei not in EI_PRESETS:
            raise unknown("E/I preset (ei=)", ei, EI_PRESETS)
        base = parse_layer(m["layer"])
        for key in ("hidden", "readout_hidden", "channels"):
            if key in m and not all(type(v) is int for v in m[key]):
                raise UserError(f"model.{key} must be a list of positive integers, got {m[key]!r}")
        if m["kind"] == "mlp":
            hidden = [int(h) for h in m["hidden"]]
            gain = float(m["hidden_gain"])
            channels = ()
        elif m["kind"] == "cnn":
            if ei != "none":
                raise UserError(f"ei={ei} applies to the MLP only; the binary CNN has signed kernels (use ei=none)")
            hidden = [int(h) for h in m["readout_hidden"]]
            gain = float(m["hidden_gain"])
            channels = tuple(int(c) for c in m["channels"])
        else:
            raise UserError(f"models/{name}.yaml: kind must be mlp or cnn, got {m['kind']!r}")
        if any(h < 1 for h in hidden) or any(c < 1 for c in channels):
            raise UserError(f"layer sizes must be positive integers, got hidden {hidden} channels {list(channels)}")
        sizes = tuple(hidden) + (int(n_classes),)
        if ei == "none":
            types = [base] * len(sizes)
        else:
            preset = load("ei_presets")[ei]
            types = [parse_layer(preset["first"])] + [parse_layer(preset["rest"])] * (len(sizes) - 1)
        spec = cls(kind=m["kind"], in_shape=tuple(int(s) for s in in_shape), n_classes=int(n_classes),
                   dense=tuple(types), dense_sizes=sizes, hidden_gain=gain, channels=channels,
                   kernel=int(m.get("kernel", 3)), stride=int(m.get("stride", 1)), pool=int(m.get("pool", 2)),
                   conv_scale=str(m.get("conv_scale", "fan_in")))
        spec.feature_size()  # validates the conv geometry
        return spec

    # ------------------------------------------------------------------ geometry
    def feature_size(self) -> int:
        """Inputs of the first dense layer (flattened image, or the conv stack's output)."""
        h, w, c = self.in_shape
        if self.kind == "mlp":
            return h * w * c
        for ch in self.channels:
            h, w = (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1
            h, w = h // self.pool, w // self.pool
            if h < 1 or w < 1:
                raise UserError(f"input {self.in_shape} is too small for the CNN's {len(self.channels)} "
                                f"conv+pool stages")
            c = ch
        return h * w * c

    def fan_ins(self) -> dict[str, int]:
        out, c = {}, self.in_shape[2]
        for i, ch in enumerate(self.channels):
            out[f"conv{i}"] = self.kernel * self.kernel * c
            c = ch
        n = self.feature_size()
        for i, size in enumerate(self.dense_sizes):
            out[f"dense{i}"] = n
            n = size
        return out

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the effective (real) weights: HWIO kernels and (fan_in, out) matrices."""
        fan, out, c = self.fan_ins(), {}, self.in_shape[2]
        for i, ch in enumerate(self.channels):
            out[f"conv{i}"] = (self.kernel, self.kernel, c, ch)
            c = ch
        for i, size in enumerate(self.dense_sizes):
            out[f"dense{i}"] = (fan[f"dense{i}"], size)
        return out

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the Bernoulli masks (signed_input layers have 2*fan_in rows)."""
        shapes = dict(self.weight_shapes())
        for i, (kind, _) in enumerate(self.dense):
            if kind == "signed_input":
                n, m = shapes[f"dense{i}"]
                shapes[f"dense{i}"] = (2 * n, m)
        return shapes

    def n_params(self) -> int:
        return int(sum(np.prod(s) for s in self.mask_shapes().values()))

    def scales(self) -> dict[str, float]:
        """The fixed scale of every layer (also used for the real-weight twin)."""
        fan = self.fan_ins()
        out = {}
        for i in range(len(self.channels)):
            out[f"conv{i}"] = 1.0 / math.sqrt(fan[f"conv{i}"]) if self.conv_scale == "fan_in" else 1.0
        for i, (kind, _) in enumerate(self.dense):
            n = fan[f"dense{i}"]
            out[f"dense{i}"] = 1.0 / math.sqrt(2 * n if kind == "signed_input" else n)
        return out

    def describe(self) -> str:
        dense = "-".join(str(s) for s in (self.feature_size(),) + self.dense_sizes)
        types = ", ".join(k if k != "ei" else f"ei({q:.4g})" for k, q in self.dense)
        conv = f"conv {list(self.channels)} k{self.kernel} -> " if self.channels else ""
        return f"{self.kind} {conv}{dense} [{types}]"

    # ------------------------------------------------------------------ masks -> weights
    def mask_weights(self, masks: dict) -> dict:
        """Effective weights of one network from its {0,1} masks (bool or float arrays)."""
        scales = self.scales()
        out = {}
        for i in range(len(self.channels)):
            k = masks[f"conv{i}"].astype(jnp.float32)
            out[f"conv{i}"] = (2.0 * k - 1.0) * scales[f"conv{i}"]
        for i, (kind, q) in enumerate(self.dense):
            name = f"dense{i}"
            k = masks[name].astype(jnp.float32)
            s = scales[name]
            if kind == "signed":
                w = (2.0 * k - 1.0) * s
            elif kind == "binary":
                w = k * s
            elif kind == "signed_input":
                n = k.shape[0] // 2
                w = (k[:n] - k[n:]) * s
            else:  # ei(q)
                w = k * jnp.asarray(ei_signs(k.shape[0], q))[:, None] * s
            out[name] = w
        return out


def forward(spec: NetSpec, weights: dict, x):
    """Logits (B, n_classes) of one network with effective ``weights`` on inputs ``x`` (B, H, W, C)."""
    h = x
    if spec.kind == "cnn":
        for i in range(len(spec.channels)):
            h = jax.lax.conv_general_dilated(h, weights[f"conv{i}"], (spec.stride, spec.stride), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.nn.relu(h)
            p = spec.pool
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, p, p, 1), (1, p, p, 1), "VALID")
    h = h.reshape(h.shape[0], -1)
    n = len(spec.dense)
    for i in range(n):
        h = h @ weights[f"dense{i}"]
        if i < n - 1:
            h = spec.hidden_gain * jax.nn.relu(h)
    return h


def population_logits(spec: NetSpec, masks: dict, x, shared_input: bool = True):
    """Logits (P, B, C) of a population of masks (leading axis P) on a shared (B, ...) or per-member
    (P, B, ...) input."""
    def one(m, xi):
        return forward(spec, spec.mask_weights(m), xi)

    return jax.vmap(one, in_axes=(0, None if shared_input else 0))(masks, x)


def init_real_weights(spec: NetSpec, key) -> dict:
    """Real-valued weights of the backprop twin: N(0, 1/fan_in) (LeCun normal), the real-valued
    counterpart of the Bernoulli layers' fixed 1/sqrt(fan_in) scale."""
    fan = spec.fan_ins()
    return {k: jax.random.normal(jax.random.fold_in(key, i), s, jnp.float32) / math.sqrt(fan[k])
            for i, (k, s) in enumerate(sorted(spec.weight_shapes().items()))}
