"""The training loop (S-JFB and its ablations), EMA, memory metering."""
