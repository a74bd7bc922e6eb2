"""Weights in every format: exports, official checkpoints, the built-in models and their build."""
