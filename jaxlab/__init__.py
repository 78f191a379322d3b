"""jaxlab: a JAX-first functional research library (see README.md and DESIGN.md)."""
