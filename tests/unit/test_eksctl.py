"""eksctl/cluster.yaml: valid for eksctl, and consistent with the chart, the IAM policies and
the operator's scheduling defaults."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO_ROOT / "eksctl" / "cluster.yaml"
IAM_DIR = REPO_ROOT / "eksctl" / "iam"
README = REPO_ROOT / "eksctl" / "README.md"
EKSCTL_SCHEMA = REPO_ROOT.parent / "shared" / "eksctl" / "schema.json"

# envsubst is run with exactly this variable list (see the file's header and the README).
TEMPLATE_VARIABLES = {"RTBSERVE_BUCKET"}
EXAMPLE_BUCKET = "rtbserve-models-123456789012"
EKS_VERSIONS = {"1.33", "1.34"}
GRAVITON_INSTANCE = re.compile(r"^[a-z]+\d+g[a-z]*\.\w+$")  # c7g.2xlarge, c8g.4xlarge, m7gd.large


def render(text: str) -> str:
    """What `envsubst '${RTBSERVE_BUCKET}'` does to the file."""
    return text.replace("${RTBSERVE_BUCKET}", EXAMPLE_BUCKET)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(render(CLUSTER_YAML.read_text()))
    return doc


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    if not EKSCTL_SCHEMA.is_file():
        pytest.skip(f"eksctl's ClusterConfig schema not found at {EKSCTL_SCHEMA} (../shared)")
    schema = json.loads(EKSCTL_SCHEMA.read_text())
    # The schema names its own draft (draft-07) and refers to "#/definitions/...".
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def node_group(cluster: dict[str, Any], pool: str) -> dict[str, Any]:
    groups: list[dict[str, Any]] = [
        g for g in cluster["managedNodeGroups"] if g["labels"].get("rtbserve.io/pool") == pool
    ]
    assert len(groups) == 1, f"expected one node group labelled rtbserve.io/pool={pool}"
    return groups[0]


def iam_account(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    accounts: list[dict[str, Any]] = [
        a for a in cluster["iam"]["serviceAccounts"] if a["metadata"]["name"] == name
    ]
    assert len(accounts) == 1, f"expected one IAM service account {name}"
    return accounts[0]


def test_cluster_yaml_validates_against_eksctl_schema(
    cluster: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(cluster)]
    assert not errors, "\n".join(errors)


def test_schema_check_rejects_unknown_fields(
    cluster: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    # Guards the test above: a typo must not pass silently.
    broken = copy.deepcopy(cluster)
    broken["managedNodeGroups"][0]["instanceTyp"] = "c7g.2xlarge"
    assert not validator.is_valid(broken)


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_only_documented_variables_are_templated(cluster: dict[str, Any]) -> None:
    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    used = {v for s in strings(raw) for v in re.findall(r"\$\{?(\w+)", s)}
    assert used == TEMPLATE_VARIABLES
    assert not [s for s in strings(cluster) if "$" in s]


def test_supported_version_three_azs_and_oidc(cluster: dict[str, Any]) -> None:
    assert cluster["metadata"]["version"] in EKS_VERSIONS
    zones = cluster["availabilityZones"]
    assert len(set(zones)) == 3
    assert all(z.startswith(cluster["metadata"]["region"]) for z in zones)
    assert cluster["iam"]["withOIDC"] is True


def test_required_addons(cluster: dict[str, Any]) -> None:
    names = {a["name"] for a in cluster["addons"]}
    assert {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "metrics-server"} <= names


def test_inference_pool_is_graviton_and_matches_operator_defaults(cluster: dict[str, Any]) -> None:
    group = node_group(cluster, "inference")
    types = group.get("instanceTypes") or [group["instanceType"]]
    assert types
    assert all(GRAVITON_INSTANCE.match(t) for t in types), types
    assert group["minSize"] >= 3, "one node per AZ at least"
    defaults = pytest.importorskip(
        "rtbserve_operator.defaults", reason="the operator's defaults module is not written yet"
    )
    # The default nodeSelector (kubernetes.io/arch is set by the kubelet: Graviton is arm64).
    selector = dict(defaults.DEFAULT_NODE_SELECTOR)
    assert selector.pop("kubernetes.io/arch", "arm64") == "arm64"
    assert selector.items() <= group["labels"].items()
    # The pool the default affinity prefers is this node group.
    assert group["labels"][defaults.INFERENCE_POOL_LABEL] == defaults.INFERENCE_POOL
    # Every taint of the pool is tolerated by default, or no model server would schedule.
    assert group.get("taints"), "the inference pool is dedicated to model servers"
    for taint in group["taints"]:
        assert any(tolerates(t, taint) for t in defaults.DEFAULT_TOLERATIONS), taint


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") not in (None, "", taint["effect"]):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, "", taint["key"])
    return toleration.get("key") == taint["key"] and toleration.get("value") == taint.get("value")


def test_nodes_are_private_and_imdsv2_only(cluster: dict[str, Any]) -> None:
    for group in cluster["managedNodeGroups"]:
        assert group["privateNetworking"] is True, group["name"]
        assert group["disableIMDSv1"] is True, group["name"]
        assert group["volumeEncrypted"] is True, group["name"]


def test_inline_policies_match_the_policy_files(cluster: dict[str, Any]) -> None:
    read = json.loads(render((IAM_DIR / "model-bucket-read.json").read_text()))
    write = json.loads(render((IAM_DIR / "loadgen-reports.json").read_text()))
    assert iam_account(cluster, "rtbserve-operator")["attachPolicy"] == read
    assert iam_account(cluster, "rtbserve-model-server")["attachPolicy"] == read
    assert iam_account(cluster, "rtbserve-loadgen")["attachPolicy"] == write


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = policy["Statement"]
    return found


@pytest.mark.parametrize("path", sorted(IAM_DIR.glob("*.json")), ids=lambda p: p.name)
def test_policies_are_least_privilege(path: Path) -> None:
    policy = json.loads(render(path.read_text()))
    assert policy["Version"] == "2012-10-17"
    for st in statements(policy):
        assert st["Effect"] == "Allow"
        for action in st["Action"]:
            assert "*" not in action, f"wildcard action {action} in {path.name}"
            assert not action.startswith(("s3:Delete", "s3:PutBucket", "iam:")), action
        for resource in st["Resource"]:
            assert resource.startswith(f"arn:aws:s3:::{EXAMPLE_BUCKET}"), resource


def actions_by_resource(policy: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for st in statements(policy):
        for resource in st["Resource"]:
            found.setdefault(resource, set()).update(st["Action"])
    return found


def test_read_policy_cannot_write() -> None:
    read = json.loads(render((IAM_DIR / "model-bucket-read.json").read_text()))
    assert actions_by_resource(read) == {
        f"arn:aws:s3:::{EXAMPLE_BUCKET}": {"s3:ListBucket", "s3:ListBucketVersions"},
        f"arn:aws:s3:::{EXAMPLE_BUCKET}/models/*": {"s3:GetObject", "s3:GetObjectVersion"},
    }


def test_loadgen_writes_only_reports() -> None:
    policy = json.loads(render((IAM_DIR / "loadgen-reports.json").read_text()))
    by_resource = actions_by_resource(policy)
    writers = [r for r, actions in by_resource.items() if "s3:PutObject" in actions]
    assert writers == [f"arn:aws:s3:::{EXAMPLE_BUCKET}/reports/*"]
    assert by_resource[f"arn:aws:s3:::{EXAMPLE_BUCKET}/replay/*"] == {"s3:GetObject"}


def test_service_account_roles_are_predictable_and_chart_managed(cluster: dict[str, Any]) -> None:
    for name in ("rtbserve-operator", "rtbserve-model-server", "rtbserve-loadgen"):
        account = iam_account(cluster, name)
        assert account["metadata"]["namespace"] == "rtbserve"
        # The chart creates the ServiceAccount; eksctl must not fight over it.
        assert account["roleOnly"] is True
        # The README builds the role ARN from this name.
        assert account["roleName"] == name
        assert f":role/{name}" in README.read_text()


def test_load_balancer_controller_account(cluster: dict[str, Any]) -> None:
    account = iam_account(cluster, "aws-load-balancer-controller")
    assert account["metadata"]["namespace"] == "kube-system"
    assert account["wellKnownPolicies"]["awsLoadBalancerController"] is True


# ---- eksctl/README.md: its commands work with the chart and CLIs as they are ----

README_ENV = {
    "AWS_REGION": "us-west-2",
    "AWS_ACCOUNT_ID": "123456789012",
    "RTBSERVE_BUCKET": EXAMPLE_BUCKET,
    "REGISTRY": "123456789012.dkr.ecr.us-west-2.amazonaws.com",
    "VPC_ID": "vpc-0123456789abcdef0",
}


def readme_commands() -> list[str]:
    """Shell commands of the README's sh blocks, continuation lines joined, variables set."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    commands: list[str] = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        if "<<EOF" in text:  # heredocs are checked on their own
            text = text.split("<<EOF")[0]
        for line in text.splitlines():
            command = line.split("  #")[0].strip()
            if command:
                commands.append(expand(command))
    return commands


def expand(text: str) -> str:
    for key, value in README_ENV.items():
        text = text.replace("${" + key + "}", value).replace("$" + key, value)
    return text


def test_readme_uses_only_its_own_variables() -> None:
    for command in readme_commands():
        if command.startswith("VPC_ID=") or "aws sts" in command or command.startswith("export"):
            continue
        assert not re.search(r"\$\{?[A-Z_]+", command), command


def test_readme_creates_the_cluster_from_this_file() -> None:
    commands = readme_commands()
    assert "envsubst '${RTBSERVE_BUCKET}' < eksctl/cluster.yaml | eksctl create cluster -f -" in [
        c.replace(EXAMPLE_BUCKET, "${RTBSERVE_BUCKET}") for c in commands
    ]
    delete = [c for c in commands if c.startswith("eksctl delete cluster")]
    assert delete
    assert f"--name {yaml.safe_load(CLUSTER_YAML.read_text())['metadata']['name']}" in delete[0]


def chart_value_args(command: str) -> list[str]:
    """The --set/--set-string/--set-json arguments of a helm command."""
    words = shlex.split(command)
    out = []
    for flag, value in itertools.pairwise(words):
        if flag in {"--set", "--set-string", "--set-json"}:
            out += [flag, value]
    return out


def test_readme_helm_commands_render_the_chart() -> None:
    from tests.chart_tools import one
    from tests.chart_tools import render as render_chart

    chart_commands = [
        c
        for c in readme_commands()
        if re.match(r"helm (install|upgrade) rtbserve charts/rtbserve", c)
    ]
    assert len(chart_commands) == 2
    # The upgrade uses --reuse-values: its values add to the install's.
    values: list[str] = []
    for command in chart_commands:
        assert "--namespace rtbserve" in command
        values += chart_value_args(command)
        manifests = render_chart(*values, include_crds=False)
        assert manifests
    accounts = {
        m["metadata"]["name"]: m["metadata"].get("annotations", {})
        for m in manifests
        if m["kind"] == "ServiceAccount"
    }
    for name in ("rtbserve-operator", "rtbserve-model-server", "rtbserve-loadgen"):
        # Exactly the roles eksctl creates, bound to these ServiceAccounts.
        assert accounts[name]["eks.amazonaws.com/role-arn"] == (
            f"arn:aws:iam::123456789012:role/{iam_role_name(name)}"
        )
    job = one(manifests, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "--rate=5000,10000,20000" in container["args"]
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"rtbserve.io/pool": "loadgen"}


def iam_role_name(service_account: str) -> str:
    cluster = yaml.safe_load(render(CLUSTER_YAML.read_text()))
    (account,) = [
        a for a in cluster["iam"]["serviceAccounts"] if a["metadata"]["name"] == service_account
    ]
    name: str = account["roleName"]
    return name


def test_readme_loadgen_runs_where_the_cluster_allows() -> None:
    cluster = yaml.safe_load(render(CLUSTER_YAML.read_text()))
    group = node_group(cluster, "loadgen")
    text = README.read_text()
    assert '"rtbserve.io/pool":"loadgen"' in text
    (taint,) = group["taints"]
    assert f'"key":"{taint["key"]}","operator":"Equal","value":"{taint["value"]}"' in text


def test_readme_rtbserve_commands_use_real_flags() -> None:
    rtbserve = Path(sys.executable).parent / "rtbserve"
    used = [shlex.split(c) for c in readme_commands() if c.startswith("rtbserve ")]
    assert used
    for argv in used:
        proc = subprocess.run(
            [str(rtbserve), argv[1], "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        for word in argv[2:]:
            if word.startswith("--"):
                assert word.split("=")[0] in proc.stdout, f"{argv[1]}: {word}"


def test_readme_inferencemodel_is_valid_for_the_crd() -> None:
    crd_path = REPO_ROOT / "crds" / "inferencemodel.yaml"
    if not crd_path.is_file():
        pytest.skip("crds/inferencemodel.yaml not written yet")
    manifest_text = re.search(
        r"<<EOF \| kubectl apply -f -\n(.*?)\nEOF", README.read_text(), re.DOTALL
    )
    assert manifest_text
    model = yaml.safe_load(expand(manifest_text.group(1)))
    crd = yaml.safe_load(crd_path.read_text())
    (version,) = [
        v for v in crd["spec"]["versions"] if v["name"] == model["apiVersion"].split("/")[1]
    ]
    schema = version["schema"]["openAPIV3Schema"]
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(model)]
    assert not errors, errors
    assert model["spec"]["artifact"]["uri"].startswith(f"s3://{EXAMPLE_BUCKET}/models/")
    # The account whose IAM role may read models/.
    assert model["spec"]["serviceAccountName"] == "rtbserve-model-server"


def test_training_runs_on_graviton_with_pod_identity(cluster: dict[str, Any]) -> None:
    pool = node_group(cluster, "training")
    assert pool["instanceType"].split(".")[0].endswith("g")  # Graviton (arm64) families
    assert pool["minSize"] == 0
    (assoc,) = [
        a for a in cluster["iam"]["podIdentityAssociations"]
        if a["serviceAccountName"] == "rtbserve-train"
    ]  # fmt: skip
    policy = json.loads(render((IAM_DIR / "training.json").read_text()))
    assert assoc["permissionPolicy"] == policy
    by_resource = actions_by_resource(policy)
    assert by_resource[f"arn:aws:s3:::{EXAMPLE_BUCKET}/logs/*"] == {"s3:GetObject"}
    writers = [r for r, actions in by_resource.items() if "s3:PutObject" in actions]
    assert writers == [f"arn:aws:s3:::{EXAMPLE_BUCKET}/models/*"]
