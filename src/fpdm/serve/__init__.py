"""`fpdm serve`: the compute dial in a browser."""
