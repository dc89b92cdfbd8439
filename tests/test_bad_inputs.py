"""Bad input is refused before Ray starts: exit status 2 and one line on stderr,
``error: <key or file>: <what is wrong>``, naming the key or file and how to fix it.
Trials the cluster can never hold fail fast instead of waiting (Ray tier)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agd_ray.cli import main
from agd_ray.config import ScalingConfig
from agd_ray.train.resources import Capacity, check_resources, refusal

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "experiments/quickstart.yaml")
IMAGENET = ["data.name=imagenet", "model.arch=resnet50", "model.depth=null", "train.loss=xent"]

# Files the table refers to as {tmp}/<name>: their YAML text (None: a folder).
FILES = {
    "unclosed.yaml": "name: x\nmodel: {arch: fcn\n",
    "twice.yaml": "model:\n  width: 64\n  width: 128\n",
    "list.yaml": "- model\n- train\n",
    "typo.yaml": "model: {arch: fcn, widht: 64}\n",
    "section.yaml": "model: 3\n",
    "folder.yaml": None,
    "unreadable.yaml": "name: x\n",
    "binary.yaml": b"\xff\xfe\x00 not text",
    "out-file": "",
    "shards/classes.json": '["n01440764"]',
    "shards/train": None,
}


def _sets(*items):
    return [arg for item in items for arg in ("--set", item)]


# (id, arguments after the config, then the texts the one line must contain)
CASES = [
    ("missing-config", ["train", "{tmp}/nope.yaml"], ["{tmp}/nope.yaml: no such file"]),
    ("config-is-folder", ["train", "{tmp}/folder.yaml"], ["folder.yaml: no config.yaml here"]),
    ("unreadable", ["train", "{tmp}/unreadable.yaml"], ["unreadable.yaml: cannot read"]),
    ("not-text", ["train", "{tmp}/binary.yaml"], ["binary.yaml: cannot read: not a UTF-8"]),
    ("malformed-yaml", ["train", "{tmp}/unclosed.yaml"], ["unclosed.yaml: malformed YAML: line"]),
    ("duplicate-key", ["train", "{tmp}/twice.yaml"], ["twice.yaml:", "line 3: duplicate key"]),
    ("not-a-mapping", ["train", "{tmp}/list.yaml"], ["list.yaml: expected a mapping"]),
    ("unknown-key-in-file", ["train", "{tmp}/typo.yaml"], ["model.widht: unknown key", "'width'"]),
    ("unknown-section", _sets("modle.width=3"), ["modle: unknown key (did you mean 'model'?)"]),
    ("section-not-mapping", ["train", "{tmp}/section.yaml"], ["model: expected a section"]),
    ("wrong-type", _sets("train.epochs=abc"), ["train.epochs:", "valid integer", "'abc'"]),
    ("wrong-type-bool", _sets("scaling.use_gpu=maybe"), ["scaling.use_gpu:", "boolean"]),
    ("depth-0", _sets("model.depth=0"), ["model.depth:", "greater than 0"]),
    ("width-negative", _sets("model.width=-3"), ["model.width:", "greater than 0"]),
    ("batch-0", _sets("train.batch_size=0"), ["train.batch_size:", "greater than 0"]),
    ("epochs-0", _sets("train.epochs=0"), ["train.epochs:", "greater than 0"]),
    ("workers-0", _sets("scaling.num_workers=0"), ["scaling.num_workers:", "greater than 0"]),
    (
        "batch-not-divisible",
        _sets("train.batch_size=100", "scaling.num_workers=3"),
        ["train.batch_size: 100 is not divisible by scaling.num_workers=3"],
    ),
    (
        "schedule-not-divisible",
        _sets("scaling.num_workers=8", "train.batch_schedule=[[0, 64], [5, 100]]"),
        ["train.batch_schedule: batch size 100 is not divisible by scaling.num_workers=8"],
    ),
    ("gain-0", _sets("optimizer.gain=0"), ["optimizer.gain:", "greater than 0"]),
    ("lr-negative", _sets("optimizer.name=adam", "optimizer.lr=-1"), ["optimizer.lr:", "than 0"]),
    (
        "unknown-arch",
        _sets("model.arch=resnet"),
        ["model.arch: unknown value 'resnet'", "valid: fcn, vgg16, resnet18, resnet50"],
    ),
    ("unknown-optimizer", _sets("optimizer.name=lion"), ["optimizer.name:", "agd", "adam", "sgd"]),
    ("unknown-loss", _sets("train.loss=hinge"), ["train.loss:", "valid: mse, xent"]),
    ("unknown-dataset", _sets("data.name=imagenette"), ["data.name:", "did you mean 'imagenet'"]),
    ("data-root-unset", _sets("data.name=cifar10"), ["data.root: cifar10 is read from data"]),
    (
        "data-root-missing",
        _sets("data.name=cifar10", "data.root={tmp}/no-cifar"),
        ["data.root: {tmp}/no-cifar: no such folder"],
    ),
    (
        "no-shards",
        _sets(*IMAGENET, "data.root={tmp}/shards"),
        ["data.root: {tmp}/shards", "no Parquet shards"],
    ),
    ("out-is-a-file", ["train", QUICK, "--out", "{tmp}/out-file"], ["--out", "is a file"]),
    ("set-without-equals", _sets("model.width"), ["--set: expected key.path=value"]),
    ("set-empty-key", _sets("=3"), ["--set: expected key.path=value, got '=3'"]),
    ("set-bad-value", _sets("model.width=[1"), ["model.width: --set value '[1' is not valid"]),
    ("set-below-a-value", _sets("model.width.x=3"), ["model.width: is a value, not a section"]),
    (
        "grid-unknown-key",
        ["sweep", QUICK, *_sets("sweep.grid.model.widht=[1, 2]")],
        ["sweep.grid.model.widht: not a config key (did you mean 'model.width'?)"],
    ),
    (
        "grid-value-out-of-range",
        ["sweep", QUICK, *_sets("sweep.grid.model.depth=[2, 0]")],
        ["sweep.grid.model.depth:", "greater than 0"],
    ),
    (
        "grid-batch-not-divisible",
        ["sweep", QUICK, *_sets("scaling.num_workers=8", "sweep.grid.train.batch_size=[64, 100]")],
        ["sweep.grid.train.batch_size: 100 is not divisible by scaling.num_workers=8"],
    ),
    (
        "grid-workers-break-batch",
        ["sweep", QUICK, *_sets("sweep.grid={scaling.num_workers: [1, 3]}")],
        ["train.batch_size: 128 is not divisible", "grid point scaling.num_workers=3"],
    ),
    (
        "grid-data-root-missing",
        ["sweep", QUICK, *_sets("data.name=cifar10", "data.root=/x", "sweep.grid.data.root=[/y]")],
        ["sweep.grid.data.root: /y: no such folder"],
    ),
    (
        "baseline-unknown-key",
        ["sweep", QUICK, *_sets("sweep.baselines=[{name: adam, lrr: [0.1]}]")],
        ["sweep.baselines[0].lrr: unknown optimizer key (did you mean 'lr'?)"],
    ),
]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """The table's files, and Ray made impossible to start: any ray.init fails the test."""
    import ray

    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            path.mkdir()
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    (tmp_path / "unreadable.yaml").chmod(0)
    if os.access(tmp_path / "unreadable.yaml", os.R_OK):  # root reads anything: pretend
        real = Path.read_text

        def read_text(self, *args, **kwargs):
            if self.name == "unreadable.yaml":
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", read_text)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(ray, "init", no_ray)
    yield tmp_path
    assert not ray.is_initialized()


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(tmp, capsys, args, expected):
    fill = str(tmp)
    args = [a.replace("{tmp}", fill) for a in args]
    if args[0] not in ("train", "sweep"):  # overrides only: train the quickstart
        args = ["train", QUICK, *args]
    if "--out" not in args:
        args += ["--out", fill + "/results"]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text.replace("{tmp}", fill) in lines[0], lines[0]
    assert not (tmp / "results").exists()  # nothing written


def _cli(*args):
    """The command as a user runs it, in a fresh process; reports whether Ray started."""
    code = (
        "import sys; from agd_ray.cli import main; rc = main(sys.argv[1:]); import ray; "
        "print('ray initialised:', ray.is_initialized()); sys.exit(rc)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return run


@pytest.mark.ray  # integration tier: a fresh Python process
def test_real_process_prints_one_line_and_starts_no_ray(tmp_path):
    """The deepest refusal before Ray (the data check, after Ray is imported)."""
    run = _cli(
        "train", QUICK, "--out", tmp_path, *_sets("data.name=cifar10", f"data.root={tmp_path}/x")
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"error: data.root: {tmp_path}/x: no such folder", run.stderr
    assert "ray initialised: False" in run.stdout


@pytest.mark.ray  # integration tier: a fresh Python process
def test_debug_shows_the_traceback():
    run = _cli("--debug", "train", QUICK, "--set", "model.depth=0")
    assert run.returncode == 2
    assert "Traceback" in run.stderr and run.stderr.strip().endswith("(got 0)")


# --- impossible resources ----------------------------------------------------------

LAPTOP = Capacity(total={"CPU": 4.0}, largest_node={"CPU": 4.0}, fixed=True)


@pytest.mark.parametrize(
    "scaling,key,text",
    [
        ({"use_gpu": True}, "scaling.use_gpu", "the cluster has no GPUs"),
        ({"num_workers": 8}, "scaling.num_workers", "8 workers x 1 CPU = 8 CPUs per trial"),
        ({"cpus_per_worker": 6}, "scaling.cpus_per_worker", "the largest node has 4 CPUs"),
    ],
)
def test_impossible_requests_are_refused(scaling, key, text):
    err = refusal(ScalingConfig(**scaling), LAPTOP)
    assert err is not None and err.key == key and text in err.problem, err
    assert refusal(ScalingConfig(num_workers=4), LAPTOP) is None


def test_an_autoscaler_we_cannot_read_only_warns(monkeypatch, capsys):
    growing = Capacity(total={"CPU": 4.0}, largest_node={"CPU": 4.0}, fixed=False)
    monkeypatch.setattr("agd_ray.train.resources.cluster_capacity", lambda: growing)
    check_resources([ScalingConfig(use_gpu=True)])
    assert capsys.readouterr().err.startswith("warning: scaling.use_gpu: the cluster has no GPUs")


@pytest.mark.ray
@pytest.mark.parametrize(
    "command,overrides,expected",
    [
        ("train", ["scaling.use_gpu=true"], "error: scaling.use_gpu: the cluster has no GPUs"),
        (
            "train",
            ["scaling.num_workers=8"],
            "error: scaling.num_workers: 8 workers x 1 CPU = 8 CPUs per trial, "
            "but the cluster has 4 CPUs in all",
        ),
        (
            "sweep",
            ["sweep.grid={scaling.num_workers: [1, 8]}", "sweep.baselines=[]"],
            "error: sweep.grid.scaling.num_workers: 8 workers x 1 CPU",
        ),
    ],
    ids=["train-gpu", "train-cpus", "sweep-cpus"],
)
def test_impossible_resources_fail_fast(
    ray_session, tmp_path, capsys, command, overrides, expected
):
    assert ray_session.cluster_resources().get("GPU", 0) == 0  # this machine has none
    start = time.perf_counter()
    args = [command, QUICK, "--out", tmp_path, *_sets("data.num_samples=500", *overrides)]
    assert main([str(a) for a in args]) == 2
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and "\n" not in err, err
    assert not list(tmp_path.rglob("*.parquet"))  # refused before any trial, nothing written
