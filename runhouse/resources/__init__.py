"""User-facing resources: clusters, envs, functions and modules."""
