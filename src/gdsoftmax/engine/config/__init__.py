"""A run's first stage: its config. The file read and refused before torch is imported (:mod:`.file`), the
dataclasses and their parsing (:mod:`.schema`), the value checks (:mod:`.checks`), β's one description and
schedule (:mod:`.beta`), the user's ``module:callable`` names (:mod:`.user_code`) and the generated reference
page (:mod:`.reference`)."""
