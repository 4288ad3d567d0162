COMMENT
DCNeuron: the conductance-based leaky integrate-and-fire neuron of Diehl & Cook (2015), with an
adaptive threshold and the trace-based STDP of its plastic input synapses (rsrp_sim; the
excitatory and inhibitory cells of the stdp-dc baseline; constants from models/diehl_cook.yaml).

The cell's state lives in this point process (the section it sits in is only a host; many cells
may share one section):
    dvm/dt = ((v_rest - vm) + ge (e_exc - vm) + gi (e_inh - vm)) / tau_m
    dge/dt = -ge / tau_ge        dgi/dt = -gi / tau_gi
    dtheta/dt = -theta / tau_theta                   (only while learning = 1)
Spike when vm > v_thresh + theta - theta_offset and not refractory: vm = v_reset, held there for
`refrac` ms; theta += theta_plus (only while learning = 1).  The inhibitory cells use the same
mechanism with theta_plus = 0 and theta_init = theta_offset = 0.

Integration, once per fixed time step dt: ge and gi decay exactly; vm takes the exact step of the
linear equation with ge and gi replaced by their averages over the step (ge tau_ge/dt (1 - e^(-dt/tau_ge))),
which is second-order accurate.  Threshold crossings are detected by WATCH; the spike (net_event)
and the reset happen in NET_RECEIVE.

Incoming NetCons, weight vector (w, kind, tpre):
    kind 0  excitatory, plastic:  ge += w_gain * w, then (learning = 1) STDP pre update
    kind 1  inhibitory, fixed:    gi += w
    kind 2  excitatory, fixed:    ge += w
STDP (traces set to 1 by a spike, decaying exponentially; pre per synapse, post1/post2 per cell):
    pre spike arriving:  w = max(0, w - nu_pre * post1);  pre = 1
    post spike:          for every plastic input: w = min(wmax, w + nu_post * pre * post2(before));
                         post1 = 1; post2 = 1
The pre trace of a synapse is exp(-(t - tpre)/tau_pre) (tpre: its last arrival, kept in the NetCon);
post1/post2 are exp(-(t - tpost)/tau_post1|2).  nspikes counts this cell's spikes (set it to 0 to restart).
ENDCOMMENT

NEURON {
    POINT_PROCESS DCNeuron
    RANGE vm, ge, gi, theta, refractory, nspikes, tpost
    RANGE tau_m, v_rest, v_reset, v_thresh, v_init, e_exc, e_inh, tau_ge, tau_gi, refrac
    RANGE theta_init, theta_offset, theta_plus, tau_theta
    RANGE w_gain, learning, nu_pre, nu_post, tau_pre, tau_post1, tau_post2, wmax
}

PARAMETER {
    : placeholders only: rsrp_sim sets every value from models/diehl_cook.yaml
    tau_m = 1 (ms)
    v_rest = 0
    v_reset = 0
    v_thresh = 0
    v_init = 0
    e_exc = 0
    e_inh = 0
    tau_ge = 1 (ms)
    tau_gi = 1 (ms)
    refrac = 0 (ms)
    theta_init = 0
    theta_offset = 0
    theta_plus = 0
    tau_theta = 1 (ms)
    w_gain = 1
    learning = 1
    nu_pre = 0
    nu_post = 0
    tau_pre = 1 (ms)
    tau_post1 = 1 (ms)
    tau_post2 = 1 (ms)
    wmax = 1
}

ASSIGNED {
    vm
    ge
    gi
    theta
    refractory
    nspikes
    tpost (ms)
}

INITIAL {
    vm = v_init
    ge = 0
    gi = 0
    theta = theta_init
    refractory = 0
    nspikes = 0
    tpost = -1e9
    net_send(0, 1)
}

BREAKPOINT {
    SOLVE advance
}

PROCEDURE advance() {
    LOCAL dge, dgi, gea, gia, b, vinf
    dge = exp(-dt / tau_ge)
    dgi = exp(-dt / tau_gi)
    gea = ge * tau_ge / dt * (1 - dge)
    gia = gi * tau_gi / dt * (1 - dgi)
    if (refractory == 0) {
        b = 1 + gea + gia
        vinf = (v_rest + gea * e_exc + gia * e_inh) / b
        vm = vinf + (vm - vinf) * exp(-dt * b / tau_m)
    } else {
        vm = v_reset
    }
    ge = ge * dge
    gi = gi * dgi
    if (learning) {
        theta = theta * exp(-dt / tau_theta)
    }
}

NET_RECEIVE (w, kind, tpre (ms)) {
    LOCAL p2
    INITIAL {
        : keep kind at finitialize (NEURON zeroes all but the first weight without this block)
        kind = kind
        tpre = -1e9
    }
    if (flag == 0) {
        if (kind == 1) {
            gi = gi + w
        } else if (kind == 2) {
            ge = ge + w
        } else {
            ge = ge + w_gain * w
            if (learning) {
                w = w - nu_pre * exp(-(t - tpost) / tau_post1)
                if (w < 0) { w = 0 }
                tpre = t
            }
        }
    } else if (flag == 1) {
        WATCH (vm > v_thresh + theta - theta_offset) 2
    } else if (flag == 2) {
        if (refractory == 0) {
            net_event(t)
            nspikes = nspikes + 1
            vm = v_reset
            refractory = 1
            net_send(refrac, 3)
            if (learning) {
                theta = theta + theta_plus
                p2 = exp(-(t - tpost) / tau_post2)
                FOR_NETCONS(w1, kind1, tpre1 (ms)) {
                    if (kind1 == 0) {
                        w1 = w1 + nu_post * exp(-(t - tpre1) / tau_pre) * p2
                        if (w1 > wmax) { w1 = wmax }
                    }
                }
                tpost = t
            }
        }
    } else if (flag == 3) {
        refractory = 0
    }
}
