"""Before ``--resume`` hands a killed sweep back to Tune: the checkpoints its saved
state names, put back where a kill at the wrong moment lost them.

Tune keeps a trial's newest ``num_to_keep`` checkpoints, deleting the oldest as a
new one arrives, and writes its experiment state only every ``num_to_keep`` of a
trial's checkpoints (or every 10 s or more). A driver killed between the deletion
and the next write leaves a state whose newest checkpoint for that trial is gone:
Tune's restore then fails the trial ("Could not recover from checkpoint as it does
not exist on storage anymore"), and the resumed sweep ends with it failed.

A lost checkpoint is replaced by a copy of the trial's oldest newer one on disk (one
exists: it is why the old one was deleted); so is an older one that the state still
keeps, which Tune would otherwise fail to delete later, with a traceback. The trial
resumes from there, its history as that checkpoint holds it; only Tune's own
iteration count starts from the lost one's (ASHA's rungs, counted in Tune's
iterations, come later for that trial).
"""

from __future__ import annotations

import posixpath

import pyarrow.fs as pafs


def restore_lost_checkpoints(experiment: str) -> list[str]:
    """Put back each unfinished trial's lost checkpoints (see the module's docstring):
    its newest and every other one its saved state keeps (Tune deletes those as new
    ones arrive, and a missing one would fail that deletion with a traceback).
    Returns the checkpoints put back. ``experiment``: Tune's experiment folder or URI."""
    from ray.tune import ExperimentAnalysis

    restored = []
    for trial in ExperimentAnalysis(experiment).trials:
        if trial.status == "TERMINATED" or trial.checkpoint is None:
            continue
        kept = [r.checkpoint for r in trial.run_metadata.checkpoint_manager.best_checkpoint_results]
        named = {c.path: c for c in [*kept, trial.checkpoint]}
        for path, checkpoint in sorted(named.items(), reverse=True):  # newest first
            if _put_back(checkpoint.filesystem, path):
                restored.append(path)
    return restored


def _put_back(fs: pafs.FileSystem, path: str) -> bool:
    """Copy the oldest newer checkpoint on disk to ``path`` if ``path`` is gone."""
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        return False
    parent, name = posixpath.split(path.rstrip("/"))
    newer = sorted(
        info.path
        for info in fs.get_file_info(pafs.FileSelector(parent))
        if info.type == pafs.FileType.Directory
        and posixpath.basename(info.path).startswith("checkpoint_")
        and posixpath.basename(info.path) > name  # checkpoint_000007 > checkpoint_000005
    )
    if not newer:
        return False
    fs.create_dir(path)  # copy_files writes files into it, it makes no folder
    pafs.copy_files(newer[0], path, source_filesystem=fs, destination_filesystem=fs)
    return True
