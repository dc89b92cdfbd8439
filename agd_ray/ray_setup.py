"""Ray set-up for the agd-ray commands, in one place.

* ``apply_env_defaults()``: the environment variables Ray reads. Some are read when
  Ray is imported, so the CLI applies them before importing anything that imports
  Ray; ``make_trainer`` applies them again in Tune trial actors, whose environment
  on a cluster started by ``ray start`` is the raylet's, not the driver's.
* ``ensure_ray(verbose)``: join the cluster named by RAY_ADDRESS (or a running
  ``ray start`` on this machine), else start a local one.
* ``tune_verbosity(verbose)``: what ``ray.tune.RunConfig(verbose=...)`` gets.

Unless ``verbose`` (``--verbose`` on the command line), the console shows the
project's lines only: the driver prints every line the user needs (epochs, trials,
progress, summary), so workers' output (Ray's C++ logs, library warnings, W&B) is
not streamed to the driver (``log_to_driver=False``); it stays in the Ray session's
log folder (``/tmp/ray/session_latest/logs`` on each node). A failed trial's error
reaches the console through the driver (its trial line, Tune's error log). Ray
Data's progress bars and INFO lines are off too (``quiet_data``), in the driver and
in the pipelines it builds.
"""

from __future__ import annotations

import logging
import os
import sys

ENV_DEFAULTS = {
    # Ray packs the working dir and builds a fresh venv per worker when the driver
    # is started by `uv run`; workers here already share the driver's environment,
    # and clusters get theirs from the job's runtime env. Read when Ray is imported.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Train's controller collects one report per poll and polls every 2 s by
    # default, which would throttle short epochs; Train propagates this variable
    # from the process that builds the TorchTrainer to its controller.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    # Sweeps keep checkpoints per trial (num_to_keep), which forces an experiment
    # snapshot each time: wanted (--resume restores from it), so Tune need not warn.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}

QUIET_ENV = {
    # Tune's default console engine prints its "Configuration for experiment" table,
    # the results folder and a TensorBoard hint even at RunConfig(verbose=0); with
    # the legacy engine (Ray's documented switch) verbose=0 prints nothing.
    "RAY_AIR_NEW_OUTPUT": "0",
    # Ray Data's progress bars (ImageNet streamed to Train workers).
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}


def apply_env_defaults() -> None:
    """Set Ray's environment defaults (a value already set by the user wins)."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def quiet_env(verbose: bool = False) -> None:
    """Environment for a console with the project's lines only (nothing if verbose).
    Set before ``ray.init`` so that a local cluster's processes inherit it."""
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)


def tune_verbosity(verbose: bool = False) -> int:
    """``RunConfig(verbose=...)``: silent (0), or Tune's documented default level (1:
    its status table, trial starts and ends; not every result) when verbose."""
    return 1 if verbose else 0


def ensure_ray(verbose: bool = False, num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (or a running local one), else start Ray.

    Unless ``verbose``, workers' output stays in their log files (see the module's
    docstring) and Ray's notice that a new local cluster uses token authentication
    is not shown (the authentication itself is kept: it is Ray's default)."""
    apply_env_defaults()
    quiet_env(verbose)
    import ray

    if not verbose and "ray.data" in sys.modules:  # else QUIET_ENV acts on its import
        quiet_data()
    if ray.is_initialized():
        return
    if not verbose:
        _hide_token_auth_notice()
    ray.init(num_cpus=num_cpus, log_to_driver=verbose, configure_logging=False)


def quiet_data() -> None:
    """Ray Data's progress bars and its INFO lines (e.g. ``read_parquet`` sampling
    files while the driver builds the ImageNet datasets) off this console.

    RAY_DATA_DISABLE_PROGRESS_BARS (``QUIET_ENV``) is read when Ray Data is imported,
    which in the driver is before ``ensure_ray``; so the current ``DataContext`` is
    set instead. A dataset copies it when built, so a Train run's pipelines (built
    here, run by Train's actors) keep the bars off too; processes of a Ray started
    here have the variable. Ray Data's log files keep every line."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(logging.WARNING)


class _DropTokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this")


def _hide_token_auth_notice() -> None:
    """Ray 2.60 logs, on every ``ray.init`` that starts a local cluster with the
    token authentication it enables by default, a notice saying so. Its only switch
    is RAY_AUTH_MODE itself (``disabled`` would drop the authentication; ``token``
    would also demand it of a cluster the command joins), so the notice is filtered
    from the logger of the (private) module that logs it; if that module moves, the
    notice merely shows again."""
    name = "ray._private.authentication.authentication_token_setup"
    log = logging.getLogger(name)
    if not any(isinstance(f, _DropTokenAuthNotice) for f in log.filters):
        log.addFilter(_DropTokenAuthNotice())


def say(line: str) -> None:
    """The console's default ``echo``: ``print``, looked up at each call.

    Not ``print`` itself: a callback holding it goes into Tune's pickled state by the
    name ``builtins.print``, and once the driver has shown a worker's log line Ray has
    replaced ``builtins.print`` (its tqdm-safe print), so cloudpickle would refuse the
    original. A module function pickles by its own name."""
    print(line)
