# Local kwok Kubernetes cluster (included by the top-level Makefile).
# The binaries are built from source once and cached outside the repo in
# $(RTBSERVE_TOOLS_DIR) (default ~/.cache/rtbserve/tools).

.PHONY: cluster-tools cluster-up cluster-down cluster-kubeconfig

## Build (or reuse) kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok, kwokctl, helm.
cluster-tools:
	hack/build-cluster-tools.sh

## Start the local cluster (name $(RTBSERVE_CLUSTER_NAME), default rtbserve) and print its kubeconfig.
cluster-up:
	hack/cluster.sh up

## Stop the local cluster and all its processes.
cluster-down:
	hack/cluster.sh down

cluster-kubeconfig:
	@hack/cluster.sh kubeconfig
