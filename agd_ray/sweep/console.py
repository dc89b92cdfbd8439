"""The sweep's console while it runs: the progress line (``SweepProgress``) and the
line printed per finished trial (``format_trial``), fed by the sweep's Tune callback
on the driver (``agd_ray.sweep.callback``).

A progress line names each running trial with its last reported epoch, the trials
done and an ETA; on a terminal it is rewritten in place, elsewhere (pipes, job
logs) printed every ``AGD_RAY_PROGRESS_S`` seconds.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from agd_ray.ray_setup import say
from agd_ray.sweep.cost import size_model
from agd_ray.trial import TrialOutcome, TrialSpec, value_text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class SweepProgress:
    """The console while a sweep runs, fed by the Tune callback on the driver.

    A progress line names the running trials with their last reported epoch and
    metrics (in-process trials report at their checkpoints, at most every
    ``train.checkpoint_min_s``; multi-worker trials every epoch), the trials done
    and an ETA (``eta_s``): the epochs left, each at the seconds measured for its
    kind of trial (``epoch_s``), so that the wide or slow trials still to come count
    for what they cost, shared over the trials that run at once. On a terminal
    (``live``)
    it is one status line rewritten in place, cleared before other lines print;
    elsewhere (pipes, job logs) it is printed every ``every_s`` seconds
    (``AGD_RAY_PROGRESS_S``, default 30)."""

    SHOWN = 4  # running trials named on the line; more are counted

    def __init__(
        self,
        specs: list[TrialSpec],
        todo: list[TrialSpec],
        echo: Callable = say,
        live: bool | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        work: dict[str, tuple[float, float]] | None = None,
    ):
        self.echo = echo
        self.work = work or {}  # trial -> (steps, FLOPs) of an epoch (sweep.cost)
        self._sizes: dict = {}  # optimizer (or None: all) -> size model, while valid
        self.total = len(specs)
        self.ended = len(specs) - len(todo)  # trials done before a --resume
        self.epochs = {s.trial_id: s.config.train.epochs for s in todo}
        self.done_epochs: dict[str, int] = {}  # trial -> epochs, of trials ended in this run
        self.kind = {s.trial_id: cost_kind(s) for s in todo}
        self.seconds: dict[tuple[str, str], float] = {}  # kind -> measured s per epoch
        self.first_start: float | None = None  # when the first trial started
        self.peak = 0  # the most trials seen running at once
        self.reported_at: dict[str, float] = {}  # trial -> when its last epoch came
        self.running: dict[str, dict[str, Any]] = {}  # trial id -> last result
        self.paused: set[str] = set()  # waiting at a rung for the rest of their grid
        if live is None:
            live = echo is say and sys.stdout.isatty()
        self.live = live
        if every_s is None:
            every_s = 1.0 if live else float(os.environ.get("AGD_RAY_PROGRESS_S", "30"))
        self.every_s = every_s
        self.clock = clock
        self.t0 = clock()
        self.last_line = self.t0  # the first line after every_s
        self.shown = False  # a live status line is on screen

    def start(self) -> None:
        self.t0 = self.last_line = self.clock()

    def started(self, trial_id: str) -> None:
        self.running.setdefault(trial_id, {})
        if self.first_start is None:
            self.first_start = self.clock()
        self.peak = max(self.peak, len(set(self.running) - self.paused))

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "epoch" in result:
            self.running[trial_id] = result
            self.reported_at[trial_id] = self.clock()
            self._measured(trial_id, result.get("wall_s"), result["epoch"] + 1)

    def _measured(self, trial_id: str, wall_s, epochs: int) -> None:
        """A trial's own seconds per epoch so far: its kind's cost."""
        if trial_id in self.kind and isinstance(wall_s, int | float) and wall_s > 0:
            self.seconds[self.kind[trial_id]] = wall_s / max(epochs, 1)
            self._sizes.clear()

    def waiting(self, trial_ids: set[str]) -> None:
        """The trials paused now (successive halving's rungs): not shown as running."""
        self.paused = set(trial_ids)

    def finished(self, trial_id: str, line: str, outcome: TrialOutcome | None = None) -> None:
        self.reported_at.pop(trial_id, None)
        if outcome is not None and outcome.history:
            self._measured(trial_id, outcome.history[-1].get("wall_s"), len(outcome.history))
        self.running.pop(trial_id, None)
        self.paused.discard(trial_id)
        if trial_id not in self.epochs:  # done before a --resume: Tune's older state
            # ran it again only to hear its stored outcome (its line may have been
            # printed before the interruption, or not: a driver killed just then)
            self._print(f"{line}  (finished before this --resume)")
            return
        self.ended += 1
        planned = self.epochs.pop(trial_id)  # a stopped or diverged trial ran fewer
        self.done_epochs[trial_id] = len(outcome.history) if outcome is not None else planned
        self._print(line)

    def tick(self) -> None:
        now = self.clock()
        if self.running and now - self.last_line >= self.every_s:
            self.last_line = now
            self._status(self.line(now))

    def stop(self) -> None:
        self._clear()

    def epoch_s(self, trial_id: str) -> float:
        """What an epoch of this trial weighs: the seconds measured for its kind (same
        optimizer and architecture); else another optimizer's on its architecture,
        times how the two optimizers' costs compare where both were measured; else,
        by its size (steps and compute, ``sweep.cost``), what its optimizer's measured
        kinds say an epoch of that size costs; else the mean over its architecture's
        kinds; else what every measured kind says of its size; else the mean over every
        kind (1 before any)."""
        kind = self.kind.get(trial_id)
        if kind in self.seconds:
            return self.seconds[kind]
        optimizer, arch = kind or (None, None)
        here = {o: v for (o, a), v in self.seconds.items() if a == arch}
        scaled = []
        for other, seconds in here.items():
            ratios = [  # this optimizer's cost over the other's, architecture by architecture
                self.seconds[(optimizer, a)] / v
                for (o, a), v in self.seconds.items()
                if o == other and (optimizer, a) in self.seconds
            ]
            if ratios:
                scaled.append(seconds * sum(ratios) / len(ratios))
        if scaled:
            return sum(scaled) / len(scaled)
        work = self.work.get(trial_id)
        mine = self._size_model(optimizer) if work else None
        if mine is not None:
            return mine(*work)
        if here:
            return sum(here.values()) / len(here)
        anyone = self._size_model(None) if work else None
        if anyone is not None:
            return anyone(*work)
        known = list(self.seconds.values())
        return sum(known) / len(known) if known else 1.0

    def _size_model(self, optimizer: str | None):
        """``sweep.cost.size_model`` over the measured kinds of ``optimizer`` (None:
        of every optimizer) whose work is known; None when there are none."""
        if optimizer not in self._sizes:
            kinds = {self.kind[t]: w for t, w in self.work.items() if t in self.kind}
            points = [
                (*kinds[kind], seconds)
                for kind, seconds in self.seconds.items()
                if kind in kinds and (optimizer is None or kind[0] == optimizer)
            ]
            self._sizes[optimizer] = size_model(points) if points else None
        return self._sizes[optimizer]

    def eta_s(self, now: float) -> float | None:
        """The seconds left: each unfinished trial's epochs left at ``epoch_s`` each,
        shared over the trials that run at once, plus each trial still to start's
        fixed cost (imports, data, model: the time since the first trial started,
        times the trials at once, less the epochs' seconds, per trial started); at
        least the longest running trial's own rest. Before any epoch time is
        measured: elapsed time x epochs left / epochs done. None before any epoch."""
        ran = {t: r["epoch"] + 1 for t, r in self.running.items() if r and t in self.epochs}
        done = sum(self.epoch_s(t) * n for t, n in (*self.done_epochs.items(), *ran.items()))
        rest = {t: self.epoch_s(t) * max(n - ran.get(t, 0), 0) for t, n in self.epochs.items()}
        if done <= 0:
            return None
        if not self.seconds:
            return (now - self.t0) * sum(rest.values()) / done
        for t, at in self.reported_at.items():  # a reporting trial's time since: epochs
            if t in ran and t not in self.paused:
                since = min(now - at, rest[t])
                done, rest[t] = done + since, rest[t] - since
        at_once = max(self.peak, 1)
        started = len(self.done_epochs) + len(self.running)
        fixed = max((now - (self.first_start or self.t0)) * at_once - done, 0) / max(started, 1)
        waiting = len([t for t in self.epochs if t not in self.running])
        longest = max((rest[t] for t in self.running if t in rest), default=0.0)
        return max((sum(rest.values()) + fixed * waiting) / at_once, longest)

    def line(self, now: float) -> str:
        running = {t: r for t, r in self.running.items() if t not in self.paused}
        head = f"{self.ended}/{self.total} done, {len(running)} running"
        if self.paused:
            head += f", {len(self.paused)} paused at a rung"
        head += f", {_duration(now - self.t0)} elapsed"
        eta = self.eta_s(now)
        if eta is not None:
            head += f", eta {_duration(eta)}"
        trials = []
        for trial_id, r in list(running.items())[: self.SHOWN]:
            if not r:
                trials.append(f"{trial_id} starting")
                continue
            text = f"{trial_id} epoch {r['epoch'] + 1}/{self.epochs.get(trial_id, '?')}"
            for key, fmt in (("val_loss", ".4f"), ("test_acc", ".3f")):
                if isinstance(r.get(key), (int, float)):
                    text += f" {key} {r[key]:{fmt}}"
            trials.append(text)
        if len(running) > self.SHOWN:
            trials.append(f"+{len(running) - self.SHOWN} more")
        return f"  ... {head} | " + " | ".join(trials)

    def _print(self, line: str) -> None:
        self._clear()
        self.echo(line)

    def _status(self, line: str) -> None:
        if not self.live:
            self.echo(line)
            return
        width = shutil.get_terminal_size().columns - 1
        sys.stdout.write("\r\033[K" + line[:width])
        sys.stdout.flush()
        self.shown = True

    def _clear(self) -> None:
        if self.shown:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self.shown = False


def cost_kind(spec: TrialSpec) -> tuple[str, str]:
    """(optimizer, architecture): trials of one kind cost alike per epoch, whatever
    their seed or learning rate (the architecture: the trial's tuning group without
    its seed, every swept key, batch size included)."""
    arch = ";".join(item for item in spec.group.split(";") if not item.startswith("seed="))
    return spec.optimizer, arch


def format_trial(spec: TrialSpec, outcome: TrialOutcome | None) -> str:
    swept = " ".join(
        f"{k.split('.')[-1]}={value_text(v)}"
        for k, v in spec.columns.items()
        if v is not None and k not in ("data.name", "model.arch")
    )
    head = f"{spec.trial_id:<24} {spec.optimizer:<8} {swept} seed={spec.seed}"
    error = ""  # a failed trial's line says why (its first line)
    if outcome is not None and outcome.status == "failed" and (outcome.error or "").strip():
        error = f"  {outcome.error.strip().splitlines()[0][:200]}"
    if outcome is None or not outcome.history:
        return f"{head}  {outcome.status if outcome else 'failed'}{error}"
    last = outcome.history[-1]
    eta = f"  eta {last['eta_mean']:.3f}" if last.get("eta_mean") is not None else ""
    return (
        f"{head}  {outcome.status}  test_acc {last['test_acc']:.4f}{eta}"
        f"  ({last['wall_s']:.1f}s){error}"
    )
