"""The R-STDP CartPole agent's interface to the environment, without NEURON: observation encoding,
action read-out and the critic (see :ref:`science-baselines`; models/rstdp_cartpole.yaml).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

LEFT, RIGHT, UNDECIDED = 0, 1, -1


class Encoder:
    """Receptive fields: each observation is z-scored with the model's mean/std and falls into one of
    ``bins`` equiprobable standard-normal bins; that bin's input unit fires at ``input_rate_hz``.

    Unit index = observation index * bins + bin, so 4 observations x 20 bins = 80 units, one per ES cell.
    """

    def __init__(self, model: dict[str, Any]):
        from scipy.stats import norm

        self.mean = np.asarray(model["obs_mean"], dtype=float)
        self.std = np.asarray(model["obs_std"], dtype=float)
        self.bins = int(model["bins"])
        self.rate = float(model["input_rate_hz"])
        inner = norm.ppf(np.linspace(0.0, 1.0, self.bins + 1)[1:-1])  # the bins - 1 finite edges
        self.edges = inner
        self.n_obs = len(self.mean)
        self.n_units = self.n_obs * self.bins

    def active_units(self, obs) -> np.ndarray:
        """Index of the active input unit for each observation."""
        z = (np.asarray(obs, dtype=float) - self.mean) / self.std
        b = np.searchsorted(self.edges, z, side="left")  # 0 .. bins-1 (a value on an edge: lower bin)
        return np.arange(self.n_obs) * self.bins + b

    def rates(self, obs) -> np.ndarray:
        """Firing rate (Hz) of every input unit for observation ``obs``."""
        r = np.zeros(self.n_units)
        r[self.active_units(obs)] = self.rate
        return r


def decide(left_spikes: int, right_spikes: int) -> int:
    """More spikes in a motor half wins; a tie (including silence) is UNDECIDED."""
    if left_spikes > right_spikes:
        return LEFT
    if right_spikes > left_spikes:
        return RIGHT
    return UNDECIDED


class Critic:
    """The reference critic ("v1"): reward from the change of the pole's angular error.

    ``loss(o) = sqrt(theta^2 + angv_bias * theta_dot^2)``; ``r = total_gain * (loss(prev) - loss(now))``,
    positive rewards times ``pos_reward_bias``, clipped to ``[-max_reward, max_reward]``.  No reward after
    a balanced state (``|theta|, |theta_dot| < balanced``); reward ``max_reward`` on reaching one; an undecided
    move is punished with ``-max_reward / pos_reward_bias``.  A failing step (terminated) gets
    ``terminal_reward``; with ``reference_terminal`` every episode-ending step gets 0 (the published code).
    """

    def __init__(self, params: dict[str, Any]):
        self.angv_bias = float(params["angv_bias"])
        self.total_gain = float(params["total_gain"])
        self.max_reward = float(params["max_reward"])
        self.pos_bias = float(params["pos_reward_bias"])
        self.balanced_eps = float(params["balanced"])
        self.terminal_reward = float(params["terminal_reward"])
        self.reference_terminal = bool(params["reference_terminal"])

    def loss(self, obs) -> float:
        return math.sqrt(float(obs[2]) ** 2 + self.angv_bias * float(obs[3]) ** 2)

    def balanced(self, obs) -> bool:
        return abs(float(obs[2])) < self.balanced_eps and abs(float(obs[3])) < self.balanced_eps

    def reward(self, prev_obs, obs, undecided: bool = False, terminated: bool = False,
               truncated: bool = False) -> float:
        if self.reference_terminal and (terminated or truncated):
            return 0.0
        if terminated:
            return self.terminal_reward
        if prev_obs is None or self.balanced(prev_obs):
            return 0.0
        if undecided:
            return -self.max_reward / self.pos_bias
        if self.balanced(obs):
            r = self.max_reward * self.pos_bias
        else:
            r = self.total_gain * (self.loss(prev_obs) - self.loss(obs))
            if r > 0:
                r *= self.pos_bias
        return float(min(max(r, -self.max_reward), self.max_reward))
