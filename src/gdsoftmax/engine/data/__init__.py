"""What a run trains on: the image data sets and their splits (:mod:`.images`), the user's own image data
(:mod:`.user`), tokenized text corpora (:mod:`.text`) and the integrity checks every source passes
(:mod:`.checks`)."""
