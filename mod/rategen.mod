COMMENT
RateGen: a spike source whose rate can be changed during a run (rsrp_sim; the input units of the
R-STDP CartPole baseline).

    hz     firing rate (Hz); 0 = silent
    noise  0: regular train (interval 1000/hz ms); 1: Poisson train (exponential intervals)
    start  time of the first possible spike (ms)

Changing the rate during a run: set `hz`, then deliver an event to the unit (e.g.
NetCon(None, unit).event(h.t)); the next spike is rescheduled at once:
    regular  next = max(t, tlast + 1000/hz)   (keeps the phase; a unit switched on fires now)
    Poisson  next = t + exponential(1000/hz)  (memoryless)
Each reschedule bumps a generation counter carried as the self-event's flag, so a spike scheduled
under an old rate is dropped when it arrives.  Poisson streams use NEURON's RANDOM (Random123)
variable `ranvar`; set its ids with unit.ranvar.set_ids(a, b, c).  INITIAL restarts the stream.
ENDCOMMENT

NEURON {
    ARTIFICIAL_CELL RateGen
    THREADSAFE
    RANGE hz, noise, start, tlast, gen, nspikes
    RANDOM ranvar
}

PARAMETER {
    hz = 0 (/s)
    noise = 0
    start = 0 (ms)
}

ASSIGNED {
    tlast (ms)
    gen
    nspikes
}

INITIAL {
    random_setseq(ranvar, 0)
    tlast = -1e9
    gen = 1
    nspikes = 0
    if (hz > 0) {
        net_send(start - t + first_delay(), gen)
    }
}

FUNCTION interval() (ms) {
    if (noise == 0) {
        interval = 1000 / hz
    } else {
        interval = 1000 / hz * random_negexp(ranvar)
    }
}

FUNCTION first_delay() (ms) {
    if (noise == 0) {
        first_delay = 0
    } else {
        first_delay = interval()
    }
}

NET_RECEIVE (w) {
    LOCAL tnext
    if (flag == 0) {
        : rate changed: reschedule under a new generation
        gen = gen + 1
        if (hz > 0) {
            if (noise == 0) {
                tnext = tlast + 1000 / hz
                if (tnext < t) { tnext = t }
            } else {
                tnext = t + interval()
            }
            if (tnext < start) { tnext = start + first_delay() }
            net_send(tnext - t, gen)
        }
    } else if (flag == gen && hz > 0) {
        net_event(t)
        tlast = t
        nspikes = nspikes + 1
        net_send(interval(), gen)
    }
}
