"""The networks: adaLN-Zero blocks, embeddings, the shared backbone, DiT, FPDM, the registry of named
sizes, and block-call counting."""
