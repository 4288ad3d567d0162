"""Analysis of run folders: figures (:mod:`.plots`), ``rsrp-sim compare`` (:mod:`.compare`) and
``rsrp-sim report`` (:mod:`.report`).  Reads run folders only; knows nothing of the protocols."""
