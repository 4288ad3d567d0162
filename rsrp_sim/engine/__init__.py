"""The population engine: strategies (RSRP trial/spike, reservoir, ES) and the one generation loop
(:mod:`.population`), the interface of a learning method (:mod:`.method`), and the population
methods of the RL (:mod:`.rl`) and classification (:mod:`.classify`) tasks, which take their
evaluators from a back-end."""
