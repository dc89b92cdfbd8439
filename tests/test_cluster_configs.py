"""Cluster configs: the launcher YAMLs validate against Ray's own autoscaler schema;
the KubeRay manifests have the structure KubeRay expects, with a GPU worker group."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_yaml_is_valid_for_rays_autoscaler(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(config))  # raises on any schema violation
    gpu_types = [t for t in config["available_node_types"] if t.startswith("gpu")]
    assert gpu_types and all(
        config["available_node_types"][t]["max_workers"] > 0 for t in gpu_types
    )
    assert any("uv sync" in c for c in config["setup_commands"])


def test_schema_check_catches_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["available_node_types"]["head"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize(
    "name,kind", [("kuberay-raycluster.yaml", "RayCluster"), ("kuberay-rayjob.yaml", "RayJob")]
)
def test_kuberay_manifests(name, kind):
    doc = yaml.safe_load((CLUSTER / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    (group,) = spec["workerGroupSpecs"]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    if kind == "RayJob":
        assert doc["spec"]["entrypoint"].startswith("agd-ray sweep ")
    text = (CLUSTER / name).read_text()
    assert "WANDB_API_KEY" not in text.replace("`WANDB_API_KEY`", "")  # keys via Secret only
