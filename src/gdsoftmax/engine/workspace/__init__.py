"""What a command touches outside a run's own files, under every other stage: the user's code, named in a
config as ``module:callable`` and hashed into a run's identity (:mod:`.user_code`), and the user's folders,
where a failed command leaves nothing it created (:mod:`.cleanup`)."""
