"""Static tests of the container image, compose file and Kubernetes manifests (no Docker engine or cluster)."""
