"""A study that sweeps ``train.batch_schedule`` (a list-valued key: batch-size ramps,
Smith et al. 2017) gets its report: the schedules are grouped, compared and named as
the JSON text the trials' groups use."""

import pyarrow.parquet as pq

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
