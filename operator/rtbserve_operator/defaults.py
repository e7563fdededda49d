"""What an InferenceModel gets when its spec leaves a field out.

Placement targets the Graviton inference node group of eksctl/cluster.yaml: arm64 nodes
labelled and tainted rtbserve.io/pool=inference. Setting nodeSelector, affinity, tolerations or
topologySpreadConstraints in the spec replaces the matching default entirely.
"""

from __future__ import annotations

from typing import Any, Final

INFERENCE_POOL_LABEL: Final = "rtbserve.io/pool"
INFERENCE_POOL: Final = "inference"

DEFAULT_REPLICAS: Final = 2

DEFAULT_NODE_SELECTOR: Final[dict[str, str]] = {"kubernetes.io/arch": "arm64"}

# Lets model servers onto the inference node group, which is tainted for dedicated use.
DEFAULT_TOLERATIONS: Final[list[dict[str, str]]] = [
    {
        "key": INFERENCE_POOL_LABEL,
        "operator": "Equal",
        "value": INFERENCE_POOL,
        "effect": "NoSchedule",
    }
]

# Prefer (not require) the inference node group: arm64 is already required by the selector.
DEFAULT_AFFINITY: Final[dict[str, Any]] = {
    "nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [
                        {"key": INFERENCE_POOL_LABEL, "operator": "In", "values": [INFERENCE_POOL]}
                    ]
                },
            }
        ]
    }
}

# No CPU limit: CFS throttling adds tail latency. Memory is limited to bound the blast radius.
DEFAULT_RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "2", "memory": "2Gi"},
    "limits": {"memory": "2Gi"},
}

# Spread each revision evenly over zones, then nodes; ScheduleAnyway so losing a zone degrades
# placement instead of blocking it.
SPREAD_TOPOLOGY_KEYS: Final = ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
