"""The report as a W&B Report (wandb-workspaces), when W&B is online.

Panels over the sweep's runs (its W&B group): test accuracy and AGD's eta over
training, final loss against width / depth / batch size, the noise scale, and the
fitted parameters. Needs network access and an API key; returns the URL.
"""

from __future__ import annotations

import json


def publish(sweep_name: str, project: str, entity: str | None, fits: dict, summary: str) -> str:
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(project=project, entity=entity or "", filters=f"Group = '{sweep_name}'")
    panels = [
        wr.LinePlot(title="test accuracy", x="Step", y=["epoch/test_acc"]),
        wr.LinePlot(title="AGD eta", x="Step", y=["train/eta"]),
        wr.LinePlot(title="gradient noise scale", x="Step", y=["epoch/noise_scale"], log_y=True),
        wr.ScatterPlot(
            title="final test loss vs width",
            x=wr.Config("model.width"),
            y=wr.SummaryMetric("test_loss"),
            log_x=True,
            log_y=True,
        ),
        wr.ScatterPlot(
            title="final test loss vs depth",
            x=wr.Config("model.depth"),
            y=wr.SummaryMetric("test_loss"),
            log_x=True,
            log_y=True,
        ),
        wr.ScatterPlot(
            title="final test accuracy vs batch size",
            x=wr.Config("train.batch_size"),
            y=wr.SummaryMetric("test_acc"),
            log_x=True,
        ),
    ]
    report = wr.Report(
        project=project,
        title=f"agd-ray: {sweep_name}",
        description="AGD scaling study (agd-ray report)",
        blocks=[
            wr.H1(text=f"agd-ray sweep {sweep_name}"),
            wr.MarkdownBlock(text=f"```\n{summary}\n```"),
            wr.PanelGrid(runsets=[runset], panels=panels),
            wr.H1(text="Fits"),
            wr.MarkdownBlock(text=f"```json\n{json.dumps(fits, indent=2)}\n```"),
        ],
        **({"entity": entity} if entity else {}),
    )
    report.save()
    return report.url
