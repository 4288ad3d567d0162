"""Infrastructure: one-line user errors (:mod:`.errors`), typed configuration (:mod:`.config`), run
folders and checkpoints (:mod:`.records`), the per-user cache (:mod:`.cache`) and the shipped data
folders (:mod:`.assets`)."""
