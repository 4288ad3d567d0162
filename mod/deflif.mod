COMMENT
DeflIF: event-driven integrate-and-fire artificial cell with synaptic "deflections"
(rsrp_sim; the cell model of the R-STDP CartPole baseline, Hasegan et al. 2022).

The membrane deviation from rest is the sum of six exponentially decaying deflections and an
after-hyperpolarisation:

    Vm = RMP + VAM + VNM + VGA + VAM2 + VNM2 + VGA2 + AHP       (clipped to [-90, 0] mV)

Index (NetCon weight element) -> deflection, decay time constant:
    0 AM  (AMPA, proximal)  tauAM      3 AM2 (AMPA, distal)  tauAM2
    1 NM  (NMDA, proximal)  tauNM      4 NM2 (NMDA, distal)  tauNM2
    2 GA  (GABA-A, proximal) tauGA     5 GA2 (GABA-A, distal) tauGA2

An input event with weights w scales its jump by the distance to the "reversal" of that
receptor (EAM, ENM, EGA are given relative to rest), so inputs saturate:
    AMPA  VAM  += wAM * (1 - dev/EAM)               (kept >= 0)
    NMDA  VNM  += wNM * B(RMP+dev) * (1 - dev/ENM)  (only while VNM < ENM; B = Mg2+ block)
    GABA  VGA  -= wGA * (1 - dev/EGA)               (only while VGA > EGA; kept <= 0)
where dev = sum of deflections + AHP, clipped to [RMP, -RMP].

Spiking is evaluated only when an event arrives (the cell is event-driven).  It fires when it is not
absolutely refractory and VTHC < Vm <= Vblock (above Vblock: depolarisation block, no spike).
A spike
  - adds an after-hyperpolarisation AHP -= ahpwt (decays with tauahp),
  - starts an absolute refractory period of `refrac` ms,
  - raises the threshold to VTHC = VTH + RRWght*(Vblock - VTH), which relaxes back to VTH with
    tauRR once the absolute refractory period is over (relative refractoriness).
ENDCOMMENT

NEURON {
    ARTIFICIAL_CELL DeflIF
    THREADSAFE
    RANGE tauAM, tauNM, tauGA, tauAM2, tauNM2, tauGA2
    RANGE tauahp, ahpwt, tauRR, RRWght, refrac
    RANGE RMP, VTH, Vblock, EAM, ENM, EGA, mg, mg0, maxnmc
    RANGE VAM, VNM, VGA, VAM2, VNM2, VGA2, AHP, Vm, VTHC, VTHR, refractory, nspikes
}

PARAMETER {
    tauAM = 10 (ms)
    tauNM = 300 (ms)
    tauGA = 10 (ms)
    tauAM2 = 20 (ms)
    tauNM2 = 300 (ms)
    tauGA2 = 20 (ms)
    tauahp = 400 (ms)
    ahpwt = 1
    tauRR = 8 (ms)
    RRWght = 0.75
    refrac = 5 (ms)
    RMP = -65
    VTH = -40
    Vblock = -25
    EAM = 65
    ENM = 90
    EGA = -15
    mg = 1.6
    mg0 = 3.57
    maxnmc = 1
}

ASSIGNED {
    VAM VNM VGA VAM2 VNM2 VGA2 AHP
    Vm VTHC VTHR
    refractory
    nspikes
    tlast (ms)
    trel (ms)
}

INITIAL {
    VAM = 0  VNM = 0  VGA = 0
    VAM2 = 0  VNM2 = 0  VGA2 = 0
    AHP = 0
    Vm = RMP
    VTHC = VTH
    VTHR = VTH
    refractory = 0
    nspikes = 0
    tlast = t
    trel = t
}

FUNCTION mgblock(v) {
    : NMDA Mg2+ unblock (Jahr & Stevens 1990)
    mgblock = maxnmc / (1 + exp(-0.062 * v) * (mg / mg0))
}

FUNCTION clip(x, lo, hi) {
    if (x < lo) {
        clip = lo
    } else if (x > hi) {
        clip = hi
    } else {
        clip = x
    }
}

PROCEDURE decay() {
    LOCAL dt0
    dt0 = t - tlast
    if (dt0 > 0) {
        VAM = VAM * exp(-dt0 / tauAM)
        VNM = VNM * exp(-dt0 / tauNM)
        VGA = VGA * exp(-dt0 / tauGA)
        VAM2 = VAM2 * exp(-dt0 / tauAM2)
        VNM2 = VNM2 * exp(-dt0 / tauNM2)
        VGA2 = VGA2 * exp(-dt0 / tauGA2)
        AHP = AHP * exp(-dt0 / tauahp)
    }
    tlast = t
    : relative refractoriness: after the absolute period the raised threshold relaxes to VTH
    if (refractory == 0 && VTHC != VTH) {
        VTHC = VTH + (VTHR - VTH) * exp(-(t - trel) / tauRR)
    }
}

NET_RECEIVE (wAM, wNM, wGA, wAM2, wNM2, wGA2) {
    LOCAL dev
    INITIAL {
        : keep all six weights at finitialize (without this block NEURON zeroes all but the first)
        wNM = wNM  wGA = wGA  wAM2 = wAM2  wNM2 = wNM2  wGA2 = wGA2
    }
    decay()
    if (flag == 2) {
        : end of the absolute refractory period
        refractory = 0
        trel = t
    } else {
        if (flag == 0) {
            dev = clip(VAM + VNM + VGA + VAM2 + VNM2 + VGA2 + AHP, RMP, -RMP)
            if (wAM > 0) {
                VAM = VAM + wAM * (1 - dev / EAM)
                if (VAM < 0) { VAM = 0 }
            }
            if (wAM2 > 0) {
                VAM2 = VAM2 + wAM2 * (1 - dev / EAM)
                if (VAM2 < 0) { VAM2 = 0 }
            }
            if (wNM > 0 && VNM < ENM) {
                VNM = VNM + wNM * mgblock(RMP + dev) * (1 - dev / ENM)
                if (VNM < 0) { VNM = 0 }
            }
            if (wNM2 > 0 && VNM2 < ENM) {
                VNM2 = VNM2 + wNM2 * mgblock(RMP + dev) * (1 - dev / ENM)
                if (VNM2 < 0) { VNM2 = 0 }
            }
            if (wGA > 0 && VGA > EGA) {
                VGA = VGA - wGA * (1 - dev / EGA)
                if (VGA > 0) { VGA = 0 }
            }
            if (wGA2 > 0 && VGA2 > EGA) {
                VGA2 = VGA2 - wGA2 * (1 - dev / EGA)
                if (VGA2 > 0) { VGA2 = 0 }
            }
        }
        Vm = clip(RMP + VAM + VNM + VGA + VAM2 + VNM2 + VGA2 + AHP, -90, 0)
        if (refractory == 0 && Vm > VTHC && Vm <= Vblock) {
            net_event(t)
            nspikes = nspikes + 1
            AHP = AHP - ahpwt
            VTHC = VTH + RRWght * (Vblock - VTH)
            VTHR = VTHC
            refractory = 1
            net_send(refrac, 2)
        }
    }
}
