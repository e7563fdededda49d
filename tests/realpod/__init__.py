"""Real pods on the local cluster: a podman-backed node agent, a local OCI registry, and the
translation between a Kubernetes Pod and `podman kube play` (see README.md)."""
