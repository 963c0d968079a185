"""Training: the trainer contract and its jobs, the built-in trainers, and the hub's own judgement of
every model (golden-set evaluation, calibration, the gate). Importing this package loads no torch."""
