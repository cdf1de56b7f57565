"""The networks a run trains: the built-in classifiers (:mod:`.classifier`), the GPT of the language runs
(:mod:`.transformer`), timm and torchvision models (:mod:`.library`), the user's own (:mod:`.user`), and
:func:`.registry.build_model`, which picks among them by ``model.name``."""
