"""Metrics (FID, KID, precision/recall), the digits feature net, Inception, `evaluate`."""
