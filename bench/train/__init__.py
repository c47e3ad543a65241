"""Training: data of an experiment, the session, checkpoints, the loop, evaluation and
submission of trained runs."""
