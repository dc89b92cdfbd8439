"""Results homes: files through pyarrow.fs, the one-driver hold, provenance, and a
sweep's config read back from its home."""

import json
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from agd_ray.config import ConfigError, dump_config, load_config
from agd_ray.lock import LOCK_FILE, HomeLock
from agd_ray.results import read_provenance, save_results
from agd_ray.storage import CONFIG_FILE, Storage, config_hash, provenance, run_paths
from agd_ray.trial import TrialOutcome, single_trial


def test_files_and_folders_round_trip(tmp_path):
    home = Storage(tmp_path / "home")
    home.write_bytes("a/b.txt", b"hello")
    assert home.read_bytes("a/b.txt") == b"hello" and home.read_bytes("nope") is None
    assert [p.name for p in (tmp_path / "home/a").iterdir()] == ["b.txt"]  # no temp left
    (tmp_path / "local/sub").mkdir(parents=True)
    (tmp_path / "local/sub/c.txt").write_text("c")
    home.upload(tmp_path / "local", "copy")
    home.download("copy", tmp_path / "back")
    assert (tmp_path / "back/sub/c.txt").read_text() == "c"


def test_results_go_to_the_home_with_their_provenance(tmp_path):
    cfg = load_config(None, ["name=prov", f"scaling.storage_path={tmp_path / 'store'}"])
    paths = run_paths(cfg, tmp_path / "out")
    assert paths.remote and paths.home == str(tmp_path / "store/prov") == paths.storage
    history = [{"epoch": 0, "step": 3, "test_acc": 0.5, "test_loss": 1.0}]
    save_results(
        [(single_trial(cfg), TrialOutcome("prov", "completed", history, 7))], paths, provenance(cfg)
    )
    for where in (tmp_path / "out/prov", tmp_path / "store/prov"):
        for name in ("trials.parquet", "epochs.parquet"):
            prov = read_provenance(where / name)
            assert prov["config_hash"] == config_hash(cfg)
            assert prov["git_commit"] and prov["torch"] and prov["ray"] and prov["agd_ray"]
        assert pq.read_table(where / "trials.parquet").column("params").to_pylist() == [7]
    # without storage_path the home is OUT/<name> and nothing is copied
    local = run_paths(load_config(None, ["name=prov"]), tmp_path / "out")
    assert not local.remote and local.storage == str(tmp_path / "out/prov/ray")


def test_config_hash_follows_what_defines_the_runs():
    base = load_config(None, [])
    assert config_hash(base) == config_hash(load_config(None, ["wandb.mode=disabled"]))
    assert config_hash(base) != config_hash(load_config(None, ["model.width=64"]))


def test_a_sweep_config_is_read_back_from_its_home(tmp_path):
    cfg = load_config("experiments/quickstart.yaml", ["model.width=64"])
    Storage(tmp_path).write_bytes(CONFIG_FILE, dump_config(cfg).encode())
    assert load_config(tmp_path) == cfg
    assert load_config(tmp_path, ["train.epochs=3"]).train.epochs == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: no config.yaml here"):
        load_config(tmp_path / "empty")


def test_one_driver_holds_a_home_at_a_time(tmp_path):
    with HomeLock(str(tmp_path / "sweep")):
        held = json.loads((tmp_path / "sweep" / LOCK_FILE).read_text())
        assert held["host"] == socket.gethostname()
        with pytest.raises(ConfigError) as err:
            HomeLock(str(tmp_path / "sweep")).acquire()
        assert str(err.value).startswith(f"{tmp_path / 'sweep'}: is in use by another driver")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "sweep").exists()  # released: no hold, no empty folder left


def _plant(home, **held):
    home.mkdir(parents=True, exist_ok=True)
    record = {"token": "x", "host": socket.gethostname(), "pid": 1, "since": time.time()}
    (home / LOCK_FILE).write_text(json.dumps({**record, "heartbeat": time.time(), **held}))


def test_a_killed_drivers_hold_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout
    _plant(tmp_path, pid=int(dead))
    with HomeLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.token


def test_a_hold_from_another_machine_counts_until_its_heartbeat_stops(tmp_path):
    _plant(tmp_path, host="elsewhere", pid=123)
    with pytest.raises(ConfigError, match="pid 123 on elsewhere"):
        HomeLock(str(tmp_path)).acquire()
    _plant(tmp_path, host="elsewhere", pid=123, heartbeat=time.time() - 600)
    with HomeLock(str(tmp_path)):
        pass


def test_the_heartbeat_keeps_a_hold_fresh(tmp_path):
    with HomeLock(str(tmp_path), beat_s=0.05):
        first = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"] > first


def test_an_unknown_storage_scheme_is_refused_by_key():
    with pytest.raises(ConfigError, match=r"^scaling.storage_path: foo:// is not a storage"):
        load_config(None, ["scaling.storage_path=foo://bucket"])
