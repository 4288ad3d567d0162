COMMENT
Relay: re-emits every event it receives as a spike at the same time (rsrp_sim).  Used to fan one
Python-triggered event (NetCon(None, relay).event(h.t)) out to many targets through its NetCons,
e.g. to deliver a reward to every RLSTDP synapse in one call.
ENDCOMMENT

NEURON {
    ARTIFICIAL_CELL Relay
    THREADSAFE
}

NET_RECEIVE (w) {
    net_event(t)
}
