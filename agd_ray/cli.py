"""The ``agd-ray`` command.

    agd-ray train CONFIG.yaml [--set key.path=value ...] [--out DIR] [--resume] [--verbose]
    agd-ray sweep CONFIG.yaml|HOME [--set key.path=value ...] [--out DIR] [--resume] [--verbose]
    agd-ray report SWEEP_DIR|URI [--out DIR]
    agd-ray data prepare-imagenet SRC_DIR DST_DIR
    agd-ray data prepare-text SRC DST [--tokenizer bytes|bpe] [--vocab-size N]
                              [--format bin|parquet]
    agd-ray submit CONFIG.yaml [--address URL] [--set ...] [--out DIR] [--no-wait] [--verbose]

With ``scaling.storage_path`` set, a sweep's results live in its home,
``<storage_path>/<name>`` (a folder, s3:// or gs://), and ``--out`` is the driver's
cache; ``agd-ray sweep HOME --resume`` and ``agd-ray report HOME`` need only that URI.

Bad input exits with status 2 and one line ``error: <key or file>: <problem>``
before any Ray work starts; ``--debug`` shows the traceback. ``train`` and ``sweep``
print the project's lines only; ``--verbose`` shows Ray's own output too (Tune's
tables, the workers' logs).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from agd_ray import ray_setup

ray_setup.apply_env_defaults()  # some are read when Ray is imported: before any import

from agd_ray.config import ConfigError, load_config  # noqa: E402
from agd_ray.timeline import mark  # noqa: E402


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML (see experiments/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by its dotted path, value parsed as YAML "
        "(e.g. --set model.width=512); repeatable",
    )
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument(
        "--verbose", action="store_true", help="show Ray's own output too (Tune, worker logs)"
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    check_out(args.out, cfg.name)
    from agd_ray.sweep.runner import run_sweep  # imports Ray: only after validation
    from agd_ray.sweep.summary import format_summary

    result = run_sweep(cfg, args.out, resume=args.resume, verbose=args.verbose)
    print(format_summary(result.summary))
    reported = True
    if cfg.sweep.report and result.outcomes:
        from agd_ray.analysis.report import report_after_sweep

        reported = report_after_sweep(result, cfg.wandb, args.debug)
    counts, early = result.counts, cfg.sweep.scheduler.upper()
    print(
        f"{counts['completed']} completed, {counts['diverged']} diverged, "
        + (f"{counts['stopped']} stopped early ({early}), " if counts["stopped"] else "")
        + f"{counts['failed'] + counts['unfinished']} failed or unfinished -> {result.paths.home}"
    )
    return 0 if result.ok and reported else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agd-ray",
        description="Scaling studies of Automatic Gradient Descent on Ray.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one training on Ray Train")
    _add_config_args(train)
    train.add_argument(
        "--resume", action="store_true", help="continue this config's run from its checkpoint"
    )
    sweep = sub.add_parser("sweep", help="run a sweep of trainings on Ray Tune")
    _add_config_args(sweep)
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted sweep (CONFIG may be its home: a results folder or URI)",
    )
    submit = sub.add_parser("submit", help="run `agd-ray sweep` on a cluster as a Ray job")
    submit.add_argument("config", help="experiment YAML (shipped with the job, validated)")
    submit.add_argument(
        "--address",
        default=None,
        help="the cluster's dashboard URL (default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)",
    )
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument(
        "--out",
        default=None,
        help="the job's output folder (default: scaling.storage_path's home, else results/ "
        "in the job's working dir on the head)",
    )
    submit.add_argument("--no-wait", action="store_true", help="submit and return")
    submit.add_argument("--verbose", action="store_true", help="the job's sweep runs --verbose")
    data = sub.add_parser("data", help="dataset preparation")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser(
        "prepare-imagenet", help="ILSVRC2012 folders -> Parquet shards (local or s3://, gs://)"
    )
    prep.add_argument("src", help="ILSVRC2012 folder with train/ and val/")
    prep.add_argument("dst", help="output folder or object-store URI")
    prep.add_argument("--shard-size", type=int, default=1024, help="images per shard")
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    text = data_sub.add_parser(
        "prepare-text", help="a text file or folder -> token ids (.bin files or Parquet shards)"
    )
    text.add_argument("src", help="a text file, or a folder of them (split by file)")
    text.add_argument("dst", help="output folder")
    text.add_argument(
        "--tokenizer",
        choices=("bytes", "bpe"),
        default="bytes",
        help="raw bytes (vocab 256) or a byte-level BPE trained on the train split",
    )
    text.add_argument("--vocab-size", type=int, default=4096, help="BPE vocab (default 4096)")
    text.add_argument(
        "--format",
        choices=("bin", "parquet"),
        default="bin",
        help="nanoGPT's uint16 .bin files, or Parquet shards for Ray Data",
    )
    report = sub.add_parser("report", help="figures, fits and report.html from a sweep")
    report.add_argument(
        "sweep_dir", help="a sweep's results: its folder (OUT/<name>) or its home URI (s3://...)"
    )
    report.add_argument(
        "--out",
        default=None,
        help="where to write (default SWEEP_DIR/report; for a URI, results/<name>/report "
        "here, and a copy in URI/report)",
    )
    return parser


def check_out(out: str, name: str) -> None:
    """Refuse an unusable --out before Ray starts: OUT/<name> must be a folder we can
    create or write to (nothing is created here; a bad config leaves no trace)."""
    path = Path(out).absolute() / name
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}", f"{existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}", f"{existing} is not writable")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    check_out(args.out, cfg.name)
    from agd_ray.train.trainer import run_train  # imports Ray: only after validation

    outcome = run_train(cfg, args.out, verbose=args.verbose, resume=args.resume)
    out = f"{args.out}/{cfg.name}"
    if outcome.status == "failed":
        print(f"training failed: {outcome.error}", file=sys.stderr)
        print(f"partial results in {out}/", file=sys.stderr)
        return 1
    last = outcome.history[-1]
    if outcome.status == "diverged":
        print(
            f"diverged: a non-finite loss or weight at step {last.get('diverged_step')} "
            f"(epoch {last['epoch'] + 1}); training stopped there",
            file=sys.stderr,
        )
    print(
        f"{outcome.status}: test_acc {last['test_acc']:.4f}  test_loss {last['test_loss']:.4f}"
        f"  ({last['step']} steps, {last['wall_s']:.1f}s)  -> {out}/trials.parquet, "
        f"{out}/epochs.parquet"
    )
    return 0 if outcome.status == "completed" else 1


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "prepare-text":
        from agd_ray.data.text_prepare import prepare_text

        prepare_text(
            args.src, args.dst, args.tokenizer, vocab_size=args.vocab_size, format=args.format
        )
        return 0
    from agd_ray.data.imagenet_prepare import prepare_imagenet

    prepare_imagenet(args.src, args.dst, shard_size=args.shard_size, workers=args.workers)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from agd_ray.submit import submit

    return submit(
        args.config,
        args.address,  # None: RAY_API_SERVER_ADDRESS, then RAY_ADDRESS
        args.overrides,
        args.out,
        wait=not args.no_wait,
        verbose=args.verbose,
    )


def cmd_report(args: argparse.Namespace) -> int:
    from agd_ray.analysis.report import make_report
    from agd_ray.storage import is_uri

    if not is_uri(args.sweep_dir):
        make_report(args.sweep_dir, args.out)
        return 0
    from agd_ray.results import RESULT_FILES
    from agd_ray.storage import Storage

    try:
        home = Storage(args.sweep_dir)
        local = Path("results") / Path(home.root).name  # the results, fetched here
        for name in RESULT_FILES:
            if not home.exists(name):
                raise ConfigError(home.uri, f"no {name} here (is it a sweep's home?)")
            home.download(name, local / name)
    except (OSError, ValueError) as err:  # unknown scheme, no credentials, no bucket
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(args.sweep_dir, f"cannot read: {err}") from None
    path = make_report(local, args.out)
    home.upload(path, "report")
    print(f"report copied to {home.uri}/report")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "data": cmd_data,
    "submit": cmd_submit,
}


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"  # no source line under it (--debug keeps Python's)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.formatwarning = _one_line
    mark(f"driver: agd-ray {args.command} starts")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The console script: ``main``, then a quick exit. Once the command is done and
    the exit handlers (Ray's shutdown, W&B's, logging's) have run, the interpreter's
    teardown of torch's and Ray's modules only spends time (1.2 s of a 10 s
    ``agd-ray train`` on 2 cores), so it is skipped, unless a thread that Python would
    wait for (not a daemon) is still running."""
    import atexit
    import threading

    code = main()
    main_thread = threading.main_thread()
    if any(t is not main_thread and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)  # the normal exit, which waits for it
    atexit._run_exitfuncs()  # CPython's own exit step (then cleared), before teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
