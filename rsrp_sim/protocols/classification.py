"""Shared construction of the classification protocols (mnist, digits, cifar10): methods rsrp and bp."""
from __future__ import annotations

from .base import MethodSpec, Protocol

JAX_CLS = "rsrp_sim.backends.jax.classification"


STDP_DC = MethodSpec("stdp-dc", "Diehl & Cook (2015) unsupervised STDP network (Poisson inputs -> N_e "
                               "adaptive-threshold LIF with lateral inhibition), neurons labelled from training "
                               "responses",
                     {"netpyne": "rsrp_sim.backends.netpyne.diehl_cook:DiehlCook"})


def make(name: str, title: str, extra: str = "", extra_methods: tuple[MethodSpec, ...] = ()) -> Protocol:
    return Protocol(
        name=name,
        description=f"{title} classification with RSRP on a Bernoulli MLP / binary CNN and a backprop "
                    f"baseline.{extra}",
        module=f"rsrp_sim.protocols.{name}",
        score_label="validation accuracy",
        steps_label="examples",
        shortcuts={"data_dir": "folder of the data files (shortcut for data_dir=DIR; default $RSRP_SIM_DATA, "
                               "else ~/.cache/rsrp_sim/data)"},
        methods=[
            MethodSpec("rsrp", "RSRP: a release probability per connection of a Bernoulli MLP (net=mlp, ei=...) "
                               "or binary CNN (net=cnn)", {"jax": f"{JAX_CLS}:BernoulliClassifier"},
                       method="rsrp_sim.engine.classify:RSRPClassify"),
            MethodSpec("bp", "backprop (optax) on the same MLP / CNN with real weights",
                       {"jax": f"{JAX_CLS}:BPClassifier"}),
            *extra_methods,
        ],
    )
