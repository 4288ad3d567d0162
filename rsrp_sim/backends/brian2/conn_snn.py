"""ConnSNN in Brian2: N copies of the recurrent Bernoulli-mask LIF network in one set of groups.

Built from ``models/conn_snn.yaml`` through :class:`rsrp_sim.models.SNNConstants`, with the same
equations and update order as ``rsrp_sim/backends/jax/snn.py``.  Per substep (``dt``)::

    [groups]        i_syn = a_syn*i_syn + R_h*rec ; rec = 0          rec: signed count of last substep's spikes
                    v     = a_m*v + (1 - a_m)*((V_r + i_syn) + R_in*i_in_raw)
    [thresholds]    spike where v > V_th
    [synapses]      on_pre of the recurrent RSRP synapses: rec_post += sgn_pre * release
    [resets]        v = V_r ; s = sgn                                  sgn = +1 excitatory, -1 inhibitory
    [after_resets]  r = a_out*r + (1 - a_out)*s/dt ; s = 0

and once per environment step (every ``substeps`` substeps, before the neuron update)::

    [start]           y_raw = sum_pre r_pre * release                  (read-out RSRP synapses, summed)
    [before_groups]   i_in_raw = 0 ; the input units "fire" and their RSRP synapses deliver
                      i_in_raw_post += x_pre * release  in input order (x = [obs, -obs])

Identical spikes to JAX's float32 arithmetic: every state variable is float32 and every arithmetic
step is one binary operation whose result is rounded to float32 by the ``f32`` function, so each
step is the correctly rounded IEEE float32 result whether the target computes it in float (numpy)
or double (C++/Cython: a double operation on two float32 values rounded once to float32 equals the
float32 operation).  The order of operations is JAX's, including the input sum, which XLA on CPU
accumulates sequentially over the 2*d_obs inputs; the recurrent sums are integers (exact).
"""
from __future__ import annotations

import numpy as np

from ...core.models import SNNConstants
from .devices import import_brian2
from .synapse import RSRPSynapses

b2 = import_brian2()
F32 = np.float32

NEURON_EQS = """
v : 1
i_syn : 1
i_in_raw : 1
rec : 1
r : 1
s : 1
nspk : 1
sgn : 1 (constant)
"""

# One binary operation per f32() (see the module docstring).
UPDATE = """
i_syn = f32(f32(a_syn * i_syn) + f32(r_h * rec))
rec = 0
v = f32(f32(a_m * v) + f32(b_m * f32(f32(v_r + i_syn) + f32(r_in * i_in_raw))))
"""
RATE = """
r = f32(f32(a_out * r) + f32(f32(b_out * s) / dt_ms))
s = 0
"""


def _f32_function():
    """``f32(x)``: round a value to IEEE float32, for every code generation target."""
    def f32(x):
        return np.asarray(x, dtype=F32)

    fn = b2.Function(f32, arg_units=[1], return_unit=1, arg_types=["float"], return_type="float",
                     stateless=True)
    # without units: Brian2's unit-checking wrapper formats every result array into an error
    # message string (eagerly), which dominated the numpy target's run time
    fn.implementations.add_numpy_implementation(f32, discard_units=True)
    fn.implementations.add_implementation("cpp", "inline float f32(double x) { return (float)x; }")
    fn.implementations.add_implementation("cython", "cdef inline float f32(double x):\n    return <float>x\n")
    try:
        from brian2cuda.cuda_generator import CUDACodeGenerator
    except ImportError:  # pragma: no cover - brian2cuda is optional
        pass
    else:
        fn.implementations.add_implementation(
            CUDACodeGenerator, "inline __host__ __device__ float f32(double x) { return (float)x; }")
    return fn


F32_FUNCTION = _f32_function()


def namespace(c: SNNConstants) -> dict:
    """The model constants as the float32 values JAX uses (Python floats, exactly representable)."""
    def f(x):
        return float(F32(x))

    return {"a_syn": f(c.alpha_syn), "r_h": f(c.r_h), "a_m": f(c.alpha_m), "b_m": f(1.0 - c.alpha_m),
            "v_r": f(c.v_reset), "v_th": f(c.v_th), "r_in": f(c.r_in), "a_out": f(c.alpha_out),
            "b_out": f(1.0 - c.alpha_out), "dt_ms": f(c.dt), "r_out": f(c.r_out),
            "substeps": int(c.substeps), "f32": F32_FUNCTION}


def initial_potentials(c: SNNConstants, rng: np.random.Generator, n: int) -> np.ndarray:
    """Membrane potentials of ``n`` neurons at the start of an episode (float32): uniform in
    ``[v_reset, v_th)`` with ``rand_init_v``, else ``v_reset``."""
    if c.rand_init_v:
        return rng.uniform(c.v_reset, c.v_th, n).astype(F32)
    return np.full(n, c.v_reset, F32)


def input_values(obs):
    """Observations (..., d_obs) -> the input units' values (..., 2*d_obs) = [obs, -obs], float32."""
    obs = np.asarray(obs, dtype=F32)
    return np.concatenate([obs, -obs], axis=-1)


class ConnSNNPopulation:
    """``n_copies`` ConnSNNs (one per population member) as Brian2 groups; see the module docstring.

    ``input_model``: equations of the input units; they must define ``x`` (default: a plain
    variable ``x : 1`` set from Python, e.g. by a ``network_operation``).
    ``readout``: the group receiving ``y_raw`` (size ``n_copies * d_act``; it must declare
    ``y_raw : 1``); a plain one is created when omitted.
    ``gate``: ``(group, variable, index)``: the neurons of copy ``k`` only spike while
    ``group.variable[index[k]] > 0`` (freezes finished copies at no spike cost).
    ``mode``: release mode of the ``in``/``h`` synapses (``trial`` or ``spike``); the read-out is
    a rate read-out and always uses trial mode.
    ``clock``: the substep clock (its ``dt`` must be the model's); default: a clock of its own.
    brian2cuda 1.0a7 needs ``brian2.defaultclock`` here (its synapse code refers to it by name).
    ``synapse_kw``: extra :class:`RSRPSynapses` arguments per group (``in``, ``h``, ``out``), e.g.
    the online-learning ones.
    """

    def __init__(self, const: SNNConstants, n_copies: int, mode: str = "trial", input_model: str = "x : 1",
                 input_namespace: dict | None = None, readout=None, gate=None, name: str = "snn", clock=None,
                 synapse_kw: dict | None = None):
        if const.connectivity != "bernoulli" or not const.input_doubling:
            raise ValueError("ConnSNNPopulation needs a model with Bernoulli connectivity and input doubling")
        c = self.c = const
        n, m, d_act = c.n_neurons, c.n_in, c.d_act
        self.n_copies = N = int(n_copies)
        ns = self.namespace = namespace(c)
        dt = c.dt * b2.ms
        self.env_dt = c.substeps * dt
        if clock is not None and abs(float(clock.dt) - float(dt)) > 1e-12:
            raise ValueError(f"the clock's dt {clock.dt} is not the model's dt {dt}")
        tick = {"dt": dt} if clock is None else {"clock": clock}
        eqs = NEURON_EQS
        threshold = "v > v_th"
        if gate is not None:
            eqs += "running : 1 (linked)\n"
            threshold += " and running > 0"
        f32 = dict.fromkeys(["v", "i_syn", "i_in_raw", "rec", "r", "s", "nspk", "sgn"], F32)
        self.neurons = b2.NeuronGroup(N * n, eqs, threshold=threshold, reset="v = v_r\ns = sgn\nnspk += 1",
                                      dtype=f32, namespace=ns, name=f"{name}_neurons", **tick)
        if gate is not None:
            group, var, index = gate
            self.neurons.running = b2.linked_var(group, var, index=np.repeat(np.asarray(index, np.int64), n))
        self.neurons.sgn = np.tile(c.signs(), N)
        self.neurons.v = c.v_reset
        self.neurons.run_regularly(UPDATE, when="groups", name=f"{name}_update")
        self.neurons.run_regularly(RATE, when="after_resets", name=f"{name}_rate")
        self.neurons.run_regularly("i_in_raw = 0", dt=self.env_dt, when="before_groups", order=-1,
                                   name=f"{name}_input_clear")

        self.inputs = b2.NeuronGroup(N * m, input_model, threshold="timestep(t, dt) % substeps == 0", reset="",
                                     dtype={"x": F32}, namespace={**ns, **(input_namespace or {})}, **tick,
                                     name=f"{name}_inputs")
        self.inputs.thresholder["spike"].when = "before_groups"
        self.inputs.thresholder["spike"].order = 0

        syn_dtype = {"p": F32, "release": F32, "elig": F32, "n_spk": F32}
        kw = {k: dict(v) for k, v in (synapse_kw or {}).items()}
        self.syn_in = RSRPSynapses(self.inputs, self.neurons, target_var="i_in_raw", mode=mode, weight="x_pre",
                                   dtype=syn_dtype, name=f"{name}_syn_in", **tick, **kw.get("in", {}))
        self.syn_in.pre.when = "before_groups"
        self.syn_in.pre.order = 1
        self.syn_h = RSRPSynapses(self.neurons, self.neurons, target_var="rec", mode=mode, weight="sgn_pre",
                                  dtype=syn_dtype, name=f"{name}_syn_h", **tick, **kw.get("h", {}))
        self._own_readout = readout is None
        if readout is None:
            readout = b2.NeuronGroup(N * d_act, "y_raw : 1", dtype={"y_raw": F32}, name=f"{name}_readout", **tick)
        self.readout = readout
        self.syn_out = RSRPSynapses(self.neurons, readout, target_var=None, mode="trial",
                                    model="y_raw_post = r_pre * release : 1 (summed)",
                                    dtype={"p": F32, "release": F32}, dt=self.env_dt, name=f"{name}_syn_out",
                                    **kw.get("out", {}))
        # logical synapses laid out as the masks' rows and columns: index = pre * n_post + post
        pre_in, post_in = np.divmod(np.arange(m * n), n)
        pre_h, post_h = np.divmod(np.arange(n * n), n)
        pre_o, post_o = np.divmod(np.arange(n * d_act), d_act)
        self.syn_in.connect_copies(pre_in, post_in, N, m, n)
        self.syn_h.connect_copies(pre_h, post_h, N, n, n)
        self.syn_out.connect_copies(pre_o, post_o, N, n, d_act)
        updater = self.syn_out.summed_updaters["y_raw_post"]
        updater.when, updater.order = "start", -10
        self.synapses = {"in": self.syn_in, "h": self.syn_h, "out": self.syn_out}

    @property
    def objects(self) -> list:
        """Everything to add to a ``brian2.Network``."""
        objs = [self.neurons, self.inputs, self.syn_in, self.syn_h, self.syn_out]
        if self._own_readout:
            objs.append(self.readout)
        return objs

    def mask_values(self, masks: dict) -> dict:
        """``{name: (n_copies, *shape) or shape}`` 0/1 masks -> per-synapse ``release`` arrays."""
        out = {}
        shapes = self.c.param_shapes()
        for k, mask in masks.items():
            a = np.asarray(mask, dtype=F32)
            if a.shape == shapes[k]:
                a = np.broadcast_to(a, (self.n_copies,) + a.shape)
            out[k] = a.reshape(-1)
        return out

    def set_masks(self, masks: dict):
        """Write fixed masks into ``release`` (runtime devices)."""
        for k, v in self.mask_values(masks).items():
            self.synapses[k].release = v

    def y(self):
        """The read-out ``y = R_out * y_raw``, shape (n_copies, d_act), float32."""
        return F32(self.namespace["r_out"]) * np.asarray(self.readout.y_raw[:], F32).reshape(self.n_copies, -1)
