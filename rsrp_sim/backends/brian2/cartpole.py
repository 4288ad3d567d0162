"""CartPole-v1 written as Brian2 equations: N environments updated once per environment step.

Standalone devices cannot call Python during a run, so for ``cpp_standalone`` and
``cuda_standalone`` the environments live inside the network: a group of N cart-poles whose
``run_regularly`` operation (every ``sim_time`` of network time; each update advances the physics
by ``TAU`` = 20 ms like gymnasium) reads the action from the read-out, integrates gymnasium's Euler
equations, checks termination and the 500-step limit, keeps the return bookkeeping (episode return,
sum of finished returns, episode count), auto-resets, and computes the normalised float32
observation the input units read.  Every constant comes from :mod:`rsrp_sim.envs.cartpole`.

Reset states come from a table (a 2-D ``TimedArray`` indexed by the episode number, row 0 = the
first episode) drawn in Python each generation and passed with ``run_args``, so a standalone run
is deterministic and needs no recompilation.  Rows past the table's end repeat its last row.

Loop control mirrors the JAX rollout: each group of environments (train, eval) keeps stepping
while any of its members has not finished an episode and fewer than ``max_steps`` steps were done;
then its environments freeze (and the networks gated by ``envs.gate`` stop spiking); on
cpp_standalone the run ends there (:meth:`CartPoleGroup.stop_early`).
"""
from __future__ import annotations

import numpy as np

from ...envs import cartpole as cp
from .conn_snn import F32_FUNCTION
from .devices import import_brian2

b2 = import_brian2()
OBS = ("cx", "cx_dot", "th", "th_dot")

ENV_EQS = """
cx : 1
cx_dot : 1
th : 1
th_dot : 1
t_ep : 1
ep_ret : 1
ret_sum : 1
n_ep : 1
k_env : 1
y_raw : 1
member : 1
run0 : 1 (linked)
run1 : 1 (linked)
running = run0 * int(member == 0) + run1 * int(member == 1) : 1
gate : 1
ended : 1
last_ret : 1
""" + "".join(f"o{c} : 1\non{c} : 1\nobs_sum{c} : 1\nobs_sq{c} : 1\nmean{c} : 1 (shared)\nscale{c} : 1 (shared)\n"
              for c in range(4))

TICK = """
first = int(k_env == 0)
live = running * (1 - first)
action = {action}
force = FORCE_MAG * (2 * action - 1)
costheta = cos(th)
sintheta = sin(th)
temp = (force + POLEMASS_LENGTH * th_dot ** 2 * sintheta) / TOTAL_MASS
thetaacc = (GRAVITY * sintheta - costheta * temp) / (LENGTH * (4.0 / 3.0 - MASSPOLE * costheta ** 2 / TOTAL_MASS))
xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
nx = cx + TAU * cx_dot
nxd = cx_dot + TAU * xacc
nth = th + TAU * th_dot
nthd = th_dot + TAU * thetaacc
term = int(nx < -X_THRESHOLD or nx > X_THRESHOLD or nth < -THETA_THRESHOLD or nth > THETA_THRESHOLD)
done = live * int(term == 1 or t_ep + 1 >= max_steps)
ret = ep_ret + 1
ret_sum += done * ret
n_ep += done
ended = done
last_ret = done * ret + (1 - done) * last_ret
ep_ret = live * (1 - done) * ret + (1 - live) * ep_ret
t_ep = live * (1 - done) * (t_ep + 1) + (1 - live) * t_ep
rsel = first + done
keep = live * (1 - done)
stay = 1 - rsel - keep
""" + "".join(f"obs_sum{c} += live * o{c}\nobs_sq{c} += live * o{c} * o{c}\n" for c in range(4)) + """
cx = rsel * resets(n_ep * ms, 4 * i) + keep * nx + stay * cx
cx_dot = rsel * resets(n_ep * ms, 4 * i + 1) + keep * nxd + stay * cx_dot
th = rsel * resets(n_ep * ms, 4 * i + 2) + keep * nth + stay * th
th_dot = rsel * resets(n_ep * ms, 4 * i + 3) + keep * nthd + stay * th_dot
""" + "".join(f"o{c} = f32({v})\non{c} = f32(f32(o{c} - mean{c}) / scale{c})\n" for c, v in enumerate(OBS)) + """
k_env += 1
"""

CTRL_EQS = """
running : 1
unfinished : 1
steps : 1
k_ctrl : 1
stopped : 1
"""
CTRL = """
steps += running * int(k_ctrl > 0)
running = running * int(unfinished > 0) * int(steps < max_steps)
k_ctrl += 1
stopped = stop_if_idle(i, running)
"""

# one environment stepping for the whole run (online learning): never stops
CTRL_CONTINUOUS = """
steps += running * int(k_ctrl > 0)
k_ctrl += 1
stopped = 0
"""

# cpp_standalone: end the run once both loops are done (the two control units are updated in order)
STOP_CPP = """
inline double stop_if_idle(const int j, const double running)
{{
    static double any_running = 0;
    if (j == 0) any_running = 0;
    any_running += running;
    if (j == 1 && any_running == 0)
    {{
{stops}
    }}
    return any_running == 0 ? 1.0 : 0.0;
}}
"""


def stop_function(clock_names=()):
    """``stop_if_idle(j, running)``: ends a cpp_standalone run when no loop runs; a no-op elsewhere."""
    def stop_if_idle(j, running):
        return np.zeros_like(np.asarray(running, dtype=float))

    fn = b2.Function(stop_if_idle, arg_units=[1, 1], return_unit=1, arg_types=["integer", "float"],
                     return_type="float", stateless=False)
    fn.implementations.add_numpy_implementation(stop_if_idle, discard_units=True)
    stops = "\n".join(f"        brian::{c}.set_interval(brian::{c}.t[0], brian::{c}.t[0]);" for c in clock_names)
    fn.implementations.add_implementation("cpp", STOP_CPP.format(stops=stops))
    fn.implementations.add_implementation(
        "cython", "cdef double stop_if_idle(int j, double running):\n    return 0\n")
    try:
        from brian2cuda.cuda_generator import CUDACodeGenerator
    except ImportError:  # pragma: no cover - brian2cuda is optional
        pass
    else:  # device code cannot end the host's loop: the finished networks just stay silent
        fn.implementations.add_implementation(
            CUDACodeGenerator, "inline __host__ __device__ double stop_if_idle(int j, double running) { return 0; }")
    return fn


def constants(max_steps: int = cp.MAX_STEPS) -> dict:
    """The namespace of the equations: gymnasium's CartPole-v1 constants (from rsrp_sim.envs.cartpole)."""
    names = ("GRAVITY", "MASSPOLE", "TOTAL_MASS", "LENGTH", "POLEMASS_LENGTH", "FORCE_MAG", "TAU",
             "THETA_THRESHOLD", "X_THRESHOLD")
    ns = {k: float(getattr(cp, k)) for k in names}
    ns["max_steps"] = int(max_steps)
    ns["f32"] = F32_FUNCTION
    return ns


def table_rows(max_steps: int) -> int:
    """Rows of the reset table: enough for an episode every 4 steps (CartPole's shortest last ~8)."""
    return max_steps // 4 + 2


def draw_resets(rng, n_envs: int, rows: int) -> np.ndarray:
    """Reset states U(-0.05, 0.05) as a (rows, 4 * n_envs) table (row e: episode e's start)."""
    return rng.uniform(-cp.RESET_HIGH, cp.RESET_HIGH, size=(rows, 4 * n_envs))


class CartPoleGroup:
    """``n_envs`` CartPole-v1 environments in Brian2 (see the module docstring).

    Each environment's ``member`` variable says which loop it belongs to: 0 sampled (train), 1
    deterministic (eval), 2 padding (never steps); it can be changed between runs (``run_args``).
    ``action``: the expression choosing the action from the read-out (default ``y > 0``).
    ``rows``: rows of the reset table (default :func:`table_rows`).
    ``loop``: ``'population'`` (the loop control above) or ``'continuous'`` (every environment steps
    for the whole run, episode after episode, e.g. for a network learning online).  Each
    environment's ``ended`` is 1 in the step in which an episode ended and ``last_ret`` holds the
    return of its last finished episode.
    """

    def __init__(self, n_envs: int, env_dt, max_steps: int = cp.MAX_STEPS,
                 action: str = "int(y_raw > 0)", extra_namespace: dict | None = None, name: str = "cartpole",
                 rows: int | None = None, loop: str = "population"):
        if loop not in ("population", "continuous"):
            raise ValueError(f"unknown loop {loop!r}; allowed: population, continuous")
        self.n_envs = int(n_envs)
        self.max_steps = int(max_steps)
        self.rows = table_rows(self.max_steps) if rows is None else int(rows)
        self.resets = b2.TimedArray(np.zeros((self.rows, 4 * self.n_envs)), dt=1 * b2.ms, name=f"{name}_resets")
        ns = {**constants(self.max_steps), "resets": self.resets, "stop_if_idle": stop_function(),
              **(extra_namespace or {})}
        f32 = {f"{p}{c}": np.float32 for c in range(4) for p in ("o", "on", "mean", "scale")}
        f32["y_raw"] = np.float32
        self.envs = b2.NeuronGroup(self.n_envs, ENV_EQS, dtype=f32, namespace=ns, dt=env_dt, name=f"{name}_envs")
        self.ctrl = b2.NeuronGroup(2, CTRL_EQS, namespace=ns, dt=env_dt, name=f"{name}_ctrl")
        self.ctrl.running = 1
        self.to_ctrl = b2.Synapses(self.envs, self.ctrl,
                                   "unfinished_post = 1.0 * int(n_ep_pre < 1) * int(member_pre == j) : 1 (summed)",
                                   dt=env_dt, name=f"{name}_to_ctrl")
        self.to_ctrl.connect(i=np.repeat(np.arange(self.n_envs), 2), j=np.tile([0, 1], self.n_envs))
        self.envs.run0 = b2.linked_var(self.ctrl, "running", index=np.zeros(self.n_envs, np.int64))
        self.envs.run1 = b2.linked_var(self.ctrl, "running", index=np.ones(self.n_envs, np.int64))
        for c in range(4):
            setattr(self.envs, f"scale{c}", 1.0)
        self.envs.run_regularly(TICK.format(action=action), when="start", order=0, name=f"{name}_tick")
        updater = self.to_ctrl.summed_updaters["unfinished_post"]
        updater.when, updater.order = "start", 5
        self.ctrl.run_regularly(CTRL if loop == "population" else CTRL_CONTINUOUS, when="start", order=6,
                                name=f"{name}_ctrl_tick")
        # ``gate``: this step's decision as a plain variable the networks can link to
        self.envs.run_regularly("gate = running", when="start", order=7, name=f"{name}_gate")

    @property
    def objects(self) -> list:
        return [self.envs, self.ctrl, self.to_ctrl]

    def stop_early(self, net):
        """Let a cpp_standalone run end as soon as both loops are done (all of ``net``'s clocks)."""
        clocks, todo = set(), list(net.objects)
        while todo:
            obj = todo.pop()
            clocks.add(obj.clock.name)
            todo.extend(getattr(obj, "contained_objects", []))
        self.ctrl.namespace["stop_if_idle"] = stop_function(sorted(clocks))

    def table(self, resets) -> np.ndarray:
        """A reset table padded (last row repeated) or cut to the group's number of rows."""
        t = np.asarray(resets, dtype=np.float64).reshape(-1, 4 * self.n_envs)
        if len(t) < self.rows:
            t = np.concatenate([t, np.repeat(t[-1:], self.rows - len(t), axis=0)])
        return np.ascontiguousarray(t[:self.rows])

    def run_args(self, resets: np.ndarray, mean, scale, member) -> dict:
        """``run_args`` for one standalone run: reset table, normaliser, loop membership."""
        args = {self.resets: self.table(resets), self.envs.member: np.asarray(member, np.float64)}
        for c in range(4):
            args[getattr(self.envs, f"mean{c}")] = float(np.float32(mean[c]))
            args[getattr(self.envs, f"scale{c}")] = float(np.float32(scale[c]))
        return args

    def set_values(self, resets: np.ndarray, mean, scale, member):
        """The same values written directly (runtime devices)."""
        self.resets.values[:] = self.table(resets)
        self.envs.member = np.asarray(member, np.float64)
        for c in range(4):
            setattr(self.envs, f"mean{c}", float(np.float32(mean[c])))
            setattr(self.envs, f"scale{c}", float(np.float32(scale[c])))

    def results(self) -> dict:
        """Per-environment fitness, episodes and observation sums; per-group steps."""
        e = self.envs
        n_ep = np.asarray(e.n_ep[:])
        ret_sum, ep_ret = np.asarray(e.ret_sum[:]), np.asarray(e.ep_ret[:])
        fitness = np.where(n_ep > 0, ret_sum / np.maximum(n_ep, 1), ep_ret)
        obs_sum = np.stack([np.asarray(getattr(e, f"obs_sum{c}")[:]) for c in range(4)], axis=1)
        obs_sq = np.stack([np.asarray(getattr(e, f"obs_sq{c}")[:]) for c in range(4)], axis=1)
        return {"fitness": fitness, "episodes": n_ep.astype(np.int64), "obs_sum": obs_sum, "obs_sq": obs_sq,
                "steps": np.asarray(self.ctrl.steps[:]).astype(np.int64)}
