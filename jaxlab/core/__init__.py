"""Paper-independent infrastructure: config checks, PRNG, meshes, checkpoints, metrics."""
