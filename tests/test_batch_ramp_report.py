"""A study that sweeps ``train.batch_schedule`` (a list-valued key: batch-size ramps,
Smith et al. 2017) gets its report: the schedules are grouped, compared and named as
the JSON text the trials' groups use."""

import pyarrow.parquet as pq

from agd_ray.analysis import figures_schedule
from agd_ray.analysis.report import Report, load_sweep
from tests.test_report import synthetic_sweep

RAMPS = "sweep.grid.train.batch_schedule=[null, [[0, 64], [2, 256]]]"


def test_a_swept_batch_schedule_is_read_as_text(tmp_path):
    out = tmp_path / "syn"
    synthetic_sweep(out, RAMPS, "sweep.grid.model.width=[64, 256]")
    trials, _ = load_sweep(out)
    assert set(trials["train.batch_schedule"]) == {"null", "[[0,64],[2,256]]"}


def test_the_report_of_a_batch_ramp_study_builds(tmp_path):
    out = tmp_path / "syn"
    synthetic_sweep(out, RAMPS, "sweep.grid.model.width=[64, 256]")
    report = Report(out)
    report.build()  # raised TypeError (unhashable) in the learning-rate transfer
    best = pq.read_table(report.out / "best_of_grid.parquet").to_pandas()
    assert set(best["train.batch_schedule"]) == {"null", "[[0,64],[2,256]]"}
    assert (report.out / "lr_transfer_adam.png").is_file()
    assert report.tick_problems == []


def test_schedules_have_readable_names():
    from agd_ray.analysis.figures_compare import initials
    from agd_ray.analysis.plotting import schedule_name, schedule_short

    assert schedule_name("null", 64) == "constant batch 64"
    assert schedule_name("[[0,64],[10,320],[20,1600]]") == "batch 64→320→1600 (epochs 0, 10, 20)"
    assert initials("model.width=64;train.batch_schedule=[[0,64],[2,256]]") == "w64 ramp 64→256"
    assert schedule_short("null") == "constant batch"
    # before a schedule's first listed epoch the run uses train.batch_size
    assert schedule_name("[[10,320]]", 64) == "batch 64→320 (epochs 0, 10)"
    assert schedule_short("[[10,320]]") == "ramp batch_size→320"


def test_a_batch_ramp_study_gets_its_curves_by_samples_and_by_steps(tmp_path):
    out = tmp_path / "syn"
    synthetic_sweep(out, RAMPS, "sweep.grid.model.width=[16, 32, 64, 128, 256]")
    report = Report(out)
    report.out.mkdir(parents=True)
    figures_schedule.batch_schedules(report)  # this figure alone: no fits to wait for
    assert (report.out / "batch_schedule.png").is_file()
    caption = dict(report.figures)["batch_schedule.png"]
    assert "samples seen" in caption and "steps taken" in caption
    assert "The first 4 of 5 settings are drawn; fits.json has all." in caption
    summary = report.fits["batch_schedule"]
    assert set(summary) == {f"width={w}" for w in (16, 32, 64, 128, 256)}  # all, not 4
    for per_optimizer in summary.values():
        assert set(per_optimizer) == {"agd", "adam"}
        for per_schedule in per_optimizer.values():
            assert set(per_schedule) == {"null", "[[0,64],[2,256]]"}
            for entry in per_schedule.values():
                assert entry["seeds"] == 2 and entry["steps"] > 0
