COMMENT
RLSTDP: reward-modulated STDP (eligibility traces gated by a later reward) on one NetCon weight
element (rsrp_sim; the plasticity of the R-STDP CartPole baseline, after Chadderdon et al. 2012).

Wiring (done by rsrp_sim.backends.netpyne):
    a NetCon from the presynaptic cell with weight >= 0  (pre spikes),
    a NetCon from the postsynaptic cell with weight < 0  (post spikes), same delay as the first,
    setpointer(netcon._ref_weight[k], 'synweight', this)  (the plastic weight).

Nearest-neighbour pairing:
    post spike with the last pre spike  mindt < t_post - t_pre <= RLwindhebb  -> Hebbian eligibility
        starts now (tlasthebbelig = t)
    pre spike with the last post spike  mindt < t_pre - t_post <= RLwindanti  -> anti-Hebbian
        eligibility starts now (tlastantielig = t)
Events before `tstart` are ignored.

reward_punish(r) (called by the controller when the critic gives a reward r != 0):
    dw = r * (hebb + anti),
    hebb = RLhebbwt while t - tlasthebbelig <= RLlenhebb (square trace; useRLexp = 1: RLhebbwt *
           exp(-(t - tlasthebbelig)/RLlenhebb)), else 0; anti likewise with RLantiwt (<= 0), RLlenanti,
    synweight <- clip(synweight + dw, wbase, wmax).
Traces are not consumed by a reward; reset_eligibility() clears them (done at episode ends).

Delivering rewards to many synapses at once: set each synapse's `rpending` (e.g. through an
h.PtrVector) and send it an event with weight vector (0, kind): kind 1 applies
reward_punish(rpending), kind 2 does the same and then reset_eligibility(); rpending is then
cleared.  (rsrp_sim fans one event out to all synapses through a Relay cell.)
ENDCOMMENT

NEURON {
    POINT_PROCESS RLSTDP
    POINTER synweight
    RANGE RLwindhebb, RLwindanti, RLlenhebb, RLlenanti, RLhebbwt, RLantiwt, useRLexp
    RANGE wbase, wmax, RLon, tstart, mindt
    RANGE tlastpre, tlastpost, tlasthebbelig, tlastantielig, lastdw, rpending
}

PARAMETER {
    RLwindhebb = 3 (ms)
    RLwindanti = 3 (ms)
    RLlenhebb = 250 (ms)
    RLlenanti = 250 (ms)
    RLhebbwt = 0.04
    RLantiwt = -0.04
    useRLexp = 0
    wbase = 0
    wmax = 400
    RLon = 1
    tstart = 0 (ms)
    mindt = 1 (ms)
}

ASSIGNED {
    synweight
    tlastpre (ms)
    tlastpost (ms)
    tlasthebbelig (ms)
    tlastantielig (ms)
    lastdw
    rpending
}

INITIAL {
    reset_eligibility()
    lastdw = 0
    rpending = 0
}

PROCEDURE reset_eligibility() {
    tlastpre = -1
    tlastpost = -1
    tlasthebbelig = -1
    tlastantielig = -1
}

NET_RECEIVE (w, kind) {
    INITIAL {
        kind = kind  : keep the event kind at finitialize (NEURON zeroes extra weights otherwise)
    }
    if (kind == 1 || kind == 2) {
        : reward event
        reward_punish(rpending)
        rpending = 0
        if (kind == 2) {
            reset_eligibility()
        }
    } else if (t >= tstart) {
        if (w >= 0) {
            : presynaptic spike: anti-Hebbian pairing with the last postsynaptic spike
            if (tlastpost > -1 && t - tlastpost > mindt && t - tlastpost <= RLwindanti) {
                tlastantielig = t
            }
            tlastpre = t
        } else {
            : postsynaptic spike: Hebbian pairing with the last presynaptic spike
            if (tlastpre > -1 && t - tlastpre > mindt && t - tlastpre <= RLwindhebb) {
                tlasthebbelig = t
            }
            tlastpost = t
        }
    }
}

FUNCTION trace(tlast, len) {
    if (tlast < 0) {
        trace = 0
    } else if (useRLexp == 0) {
        if (t - tlast <= len) {
            trace = 1
        } else {
            trace = 0
        }
    } else {
        trace = exp(-(t - tlast) / len)
    }
}

PROCEDURE reward_punish(r) {
    lastdw = 0
    if (RLon == 1 && r != 0) {
        lastdw = r * (RLhebbwt * trace(tlasthebbelig, RLlenhebb) + RLantiwt * trace(tlastantielig, RLlenanti))
        synweight = synweight + lastdw
        if (synweight > wmax) { synweight = wmax }
        if (synweight < wbase) { synweight = wbase }
    }
}
