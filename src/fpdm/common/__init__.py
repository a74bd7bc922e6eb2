"""What every layer uses: digests, atomic checkpoints and random states, run-folder locks, torchrun worlds,
image grids and plots."""
