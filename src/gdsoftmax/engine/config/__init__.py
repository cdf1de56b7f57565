"""What a run is asked to do: its config. The file read and refused before torch is imported (:mod:`.file`), the
dataclasses and their parsing (:mod:`.schema`), the value checks (:mod:`.checks`), β's one description and
schedule (:mod:`.beta`) and the generated reference page (:mod:`.reference`). A config is checked against
the catalogs of the stages below it (data sets, models, objectives, optimizers), so it imports them and they
never import it."""
