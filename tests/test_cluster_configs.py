"""Cluster configs: the launcher YAMLs validate against Ray's own autoscaler schema
and load with the providers' SDKs installed; their setup installs the project from
uv.lock and checks the GPU driver; the KubeRay manifests have the structure the
KubeRay operator reads (no CRD schema is available offline, so the fields the
RayCluster/RayJob controllers use are checked one by one); the image, AMI and other
pinned values agree with cluster/README.md and with uv.lock."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = {"aws.yaml": "aws", "gcp.yaml": "gcp"}
KUBERAY = {
    "kuberay-raycluster.yaml": "RayCluster",
    "kuberay-rayjob.yaml": "RayJob",
    "kuberay-rayjob-runtime-env.yaml": "RayJob",
}


def load(name):
    return yaml.safe_load((CLUSTER / name).read_text())


def readme_pins() -> dict[str, str]:
    """The "Pinned values" table of cluster/README.md: {Value: Setting}."""
    text = (CLUSTER / "README.md").read_text()
    section = text.split("## Pinned values", 1)[1].split("\n## ", 1)[0]
    pins = dict(re.findall(r"^\| ([^|`]+?) \| `([^`]+)` \|$", section, re.M))
    assert len(pins) >= 10, pins
    return pins


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (version,) = {p["version"] for p in lock["package"] if p["name"] == package}
    return version


def gpu_types(config):
    return {k: v for k, v in config["available_node_types"].items() if k.startswith("gpu")}


# --- cluster launcher ----------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_yaml_is_valid_for_rays_autoscaler(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    validate_config(prepare_config(config))  # raises on any schema violation
    gpus = gpu_types(config)
    assert gpus and all(t["resources"].get("GPU", 0) >= 1 for t in gpus.values())
    assert sum(t["max_workers"] for t in gpus.values()) > 0
    assert any("uv sync" in c for c in config["setup_commands"])


def test_schema_check_catches_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("aws.yaml")
    config["available_node_types"]["head"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name,provider", LAUNCHERS.items())
def test_launcher_provider_sdk_is_installed(name, provider):
    """`ray up` imports the provider's SDK (boto3, google-api-python-client): the
    project's extras, also in the dev group so that this check runs under pytest."""
    from ray.autoscaler._private.providers import _get_node_provider_cls

    config = load(name)
    assert config["provider"]["type"] == provider
    assert _get_node_provider_cls(config["provider"]) is not None  # imports the SDK
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert provider in extras


@pytest.mark.parametrize("name,provider", LAUNCHERS.items())
def test_launcher_installs_the_locked_project_on_every_node(name, provider):
    config = load(name)
    setup = "\n".join(config["setup_commands"])  # run on the head and on every worker
    assert re.search(rf"uv sync --frozen .*--extra {provider}\b", setup)
    pins = readme_pins()
    assert f"astral.sh/uv/{pins['uv']}/install.sh" in setup
    assert config["file_mounts"] == {"/home/ubuntu/agd-ray": "."}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("cd ~/agd-ray" in c and "uv run" in c for c in start), start
    assert "--head" in config["head_start_ray_commands"][-1]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_syncs_sources_only(name):
    config = load(name)
    excluded = {p.strip("/*") for p in config["rsync_exclude"]}
    assert {".venv", "results", ".git", "wandb", "data"} <= excluded
    assert ".gitignore" in config["rsync_filter"]
    # Anchored at the project root: agd_ray/data/ is a package and must travel.
    for pattern in config["rsync_exclude"]:
        if pattern.strip("/*") in {".venv", "results", "wandb", "data"}:
            assert pattern.startswith("/"), pattern


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_rsync_filters_with_real_rsync(name, tmp_path):
    """The filter arguments Ray builds from the YAML, applied by rsync to a small copy
    of the project's layout."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    config = load(name)
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = [
        "pyproject.toml", "uv.lock", "agd_ray/__init__.py", "agd_ray/data/__init__.py",
        "experiments/quickstart.yaml", ".venv/lib/torch.so", "results/q/trials.parquet",
        "wandb/run/x", "data/cifar/batch", ".git/HEAD", "agd_ray/__pycache__/x.pyc",
        "runs/x",
    ]  # fmt: skip
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_text("x")
    shutil.copy(ROOT / ".gitignore", src / ".gitignore")
    args = SSHCommandRunner._create_rsync_filter_args(None, options=config)
    subprocess.run(["rsync", "-a", *args, f"{src}/", f"{dst}/"], check=True)
    synced = {str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()}
    assert synced == {
        "pyproject.toml", "uv.lock", "agd_ray/__init__.py", "agd_ray/data/__init__.py",
        "experiments/quickstart.yaml", ".gitignore",
    }  # fmt: skip


@pytest.mark.parametrize("name", LAUNCHERS)
def test_gpu_workers_wait_for_a_new_enough_driver(name):
    config = load(name)
    checks = config["worker_setup_commands"]  # global: all workers are GPU nodes
    assert all(k.startswith("gpu") for k in config["available_node_types"] if k != "head")
    assert any("nvidia-smi" in c and "sleep" in c for c in checks)  # waits for the driver
    assert any("-ge 580" in c for c in checks)
    assert any("torch.cuda.is_available()" in c for c in checks)
    for node_type in gpu_types(config).values():
        assert "worker_setup_commands" not in node_type  # would replace the global ones


def run_setup(command: str, tmp_path: Path, nvidia_smi: str) -> subprocess.CompletedProcess:
    """Runs a setup command with a stand-in nvidia-smi (and a sleep that returns at once)."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
    fake.chmod(0o755)
    script = f"sleep() {{ :; }}\nexport PATH={fake.parent}:$PATH\n{command}\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_driver_check_refuses_a_driver_older_than_580(name, tmp_path):
    checks = load(name)["worker_setup_commands"]
    (wait,) = [c for c in checks if "sleep" in c]
    (driver,) = [c for c in checks if "-ge 580" in c]
    assert run_setup(wait, tmp_path, "exit 0").returncode == 0
    assert run_setup(wait, tmp_path, "exit 9").returncode != 0  # never came up
    for version, ok in [("580.95.05", True), ("595.58.03", True), ("570.133.20", False)]:
        result = run_setup(driver, tmp_path, f"echo {version}")
        assert (result.returncode == 0) == ok, (version, result.stderr)
        if not ok:
            assert "older than R580" in result.stderr


def test_aws_image_and_spot():
    config = load("aws.yaml")
    pins = readme_pins()
    assert config["provider"]["region"] == pins["AWS region"]
    assert config["provider"]["cache_stopped_nodes"] is False
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["ImageId"] == pins["AWS AMI"]
    text = (CLUSTER / "aws.yaml").read_text()
    assert pins["AWS AMI name"] in text
    spot = config["available_node_types"]["gpu_1x_spot"]["node_config"]
    assert spot["InstanceMarketOptions"]["MarketType"] == "spot"
    head = config["available_node_types"]["head"]["node_config"]
    assert "InstanceMarketOptions" not in head  # the driver's node is never spot


def test_gcp_gpu_nodes_install_the_driver():
    config = load("gcp.yaml")
    pins = readme_pins()
    for node_type in config["available_node_types"].values():
        (disk,) = node_type["node_config"]["disks"]
        assert disk["initializeParams"]["sourceImage"] == pins["GCP image"]
    assert pins["GCP image"].endswith("nvidia-" + pins["Minimum NVIDIA driver"])
    for node_type in gpu_types(config).values():
        node = node_type["node_config"]
        items = {i["key"]: i["value"] for i in node["metadata"]["items"]}
        assert items["install-nvidia-driver"] == "True"
        assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"  # GPUs can't migrate
    spot = config["available_node_types"]["gpu_1x_spot"]["node_config"]["scheduling"]
    assert spot["provisioningModel"] == "SPOT"


def test_pins_agree_with_uv_lock():
    """The driver requirement the README states follows from the CUDA runtime of the
    locked torch; the Ray images and rayVersion follow the locked Ray."""
    pins = readme_pins()
    cuda = ".".join(locked_version("nvidia-cuda-runtime").split(".")[:2])
    assert cuda == pins["CUDA runtime of the locked torch"]
    if cuda.startswith("13."):
        assert int(pins["Minimum NVIDIA driver"]) >= 580
    ray_version = locked_version("ray")
    assert pins["Ray base image"] == f"rayproject/ray:{ray_version}-py311-gpu"
    for name in KUBERAY:
        doc = load(name)
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec["rayVersion"] == ray_version


# --- the image -----------------------------------------------------------------------


def test_dockerfile_installs_the_lock_into_rays_image():
    text = (CLUSTER / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == f"FROM {readme_pins()['Ray base image']}"
    assert f"uv=={readme_pins()['uv']}" in text
    assert "COPY --chown=ray:users pyproject.toml uv.lock ./" in text
    assert re.search(r"uv export --frozen --no-dev --no-emit-project", text)
    assert "--require-hashes" in text and "--no-deps ." in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "results", "wandb", "data"} <= set(ignored)


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_dockerfile_export_step_works_on_the_lock(tmp_path):
    """The Dockerfile's `uv export` sees only pyproject.toml and uv.lock."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "uv.lock", tmp_path)
    out = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--format",
         "requirements-txt", "--offline"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", out, re.M))
    assert pinned["ray"] == locked_version("ray") and pinned["torch"] == locked_version("torch")
    assert "pytest" not in pinned and "--hash=sha256:" in out


# --- KubeRay -------------------------------------------------------------------------

SECRETISH = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.I)


def ray_groups(doc):
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    return spec["headGroupSpec"], spec["workerGroupSpecs"]


@pytest.mark.parametrize("name,kind", KUBERAY.items())
def test_kuberay_manifests(name, kind):
    doc = load(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    head, groups = ray_groups(doc)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    (group,) = groups
    assert group["groupName"] and isinstance(group["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pins = readme_pins()
    expected = pins["Ray base image"] if "runtime-env" in name else pins["agd-ray image"]
    for pod in [head["template"]["spec"], group["template"]["spec"]]:
        (ray_container, *_) = pod["containers"]
        assert ray_container["image"] == expected
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in ray_container["volumeMounts"]:
            claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim in (pins["Data volume claim"], pins["Results volume claim"])
        assert any(m["mountPath"] == "/data" for m in ray_container["volumeMounts"])
        # Keys only from the Secret, never as values in the manifest.
        for env in ray_container.get("env", []):
            if SECRETISH.search(env["name"]):
                assert "value" not in env, env["name"]
                assert env["valueFrom"]["secretKeyRef"]["name"] == "agd-ray-secrets"
        names = {e["name"] for e in ray_container.get("env", [])}
        assert {"WANDB_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    head_container = head["template"]["spec"]["containers"][0]
    head_mounts = {m["mountPath"] for m in head_container["volumeMounts"]}
    assert "/results" in head_mounts
    if kind == "RayJob":
        spec = doc["spec"]
        entry = spec["entrypoint"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert not re.search(r"&&|;|\||\$|`", entry)  # the submitter runs it in a shell
        assert f"--set scaling.storage_path={pins['Storage path in the KubeRay jobs']}" in entry
        out = re.search(r"--out (\S+)", entry).group(1)
        assert any(out.startswith(m) for m in head_mounts - {"/data"})  # outlives the cluster
        assert "agd-ray sweep " in entry


def test_kuberay_image_job_runs_the_projects_config():
    entry = load("kuberay-rayjob.yaml")["spec"]["entrypoint"]
    assert entry.startswith("agd-ray sweep /home/ray/agd-ray/experiments/")
    config = entry.split()[2].removeprefix("/home/ray/agd-ray/")
    assert (ROOT / config).is_file()  # the Dockerfile copies experiments/ there
    assert "WORKDIR /home/ray/agd-ray" in (CLUSTER / "Dockerfile").read_text()


def test_kuberay_runtime_env_job_uses_uv():
    doc = load("kuberay-rayjob-runtime-env.yaml")
    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == readme_pins()["working_dir of the no-image RayJob"]
    # agd-ray turns Ray's uv integration off unless this is set: the workers would
    # then run the stock image's Python, without torch or agd-ray.
    assert runtime_env["env_vars"]["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "1"
    entry = doc["spec"]["entrypoint"]
    assert entry.startswith("uv run --frozen ")
    config = entry.split("agd-ray sweep ", 1)[1].split()[0]
    assert (ROOT / config).is_file()  # relative to the working_dir, i.e. the repository
    from ray._private.runtime_env.uv_runtime_env_hook import _create_uv_run_parser, _parse_args

    options, command = _parse_args(_create_uv_run_parser(), entry.split()[2:])
    assert options.frozen and command[:2] == ["agd-ray", "sweep"]


def test_kuberay_volumes_are_defined():
    pins = readme_pins()
    claims = {pins["Data volume claim"], pins["Results volume claim"]}
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay-pvcs.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"} == claims
    data = next(d for d in docs if d["metadata"]["name"] == pins["Data volume claim"])
    assert set(data["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}  # many pods
    shell = load("kuberay-volume-shell.yaml")
    assert {v["persistentVolumeClaim"]["claimName"] for v in shell["spec"]["volumes"]} == claims
