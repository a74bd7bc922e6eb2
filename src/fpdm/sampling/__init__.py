"""Sampling under a block budget: budgets, the sampler loop, many-seed runs with resumable parts,
calibrated schedules, sweeps."""
