"""The math, written once for every back-end: the RSRP estimator (:mod:`.rule`), the reward
transforms (:mod:`.shaping`), the classification rewards (:mod:`.rewards`) and the model constants
read from ``models/*.yaml`` (:mod:`.models`)."""
