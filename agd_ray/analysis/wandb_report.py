"""The report as a W&B Report (wandb-workspaces), when W&B is online.

It carries what ``report.html`` carries: the headline (AGD against each tuned
baseline, selection on validation, compute multiplier), every figure of the local
report (logged as images to a ``<sweep>-report`` run in the sweep's W&B group and
shown in media panels), live panels over the sweep's runs (validation loss,
accuracy, AGD's eta, validation loss against learning rate and width) and the
fitted laws. Needs network access and an API key; returns the URL.
"""

from __future__ import annotations

from agd_ray.analysis.headline import headline_text
from agd_ray.analysis.html import fit_rows


def media_key(figure: str) -> str:
    return f"report/{figure.removesuffix('.png')}"


def log_figures(report, project: str, entity: str | None) -> None:
    """One W&B run in the sweep's group holding the report's figures and headline."""
    import wandb

    name = report.sweep_dir.name
    run = wandb.init(
        project=project,
        entity=entity,
        group=name,
        name=f"{name}-report",
        job_type="report",
        reinit="create_new",
    )
    with run:
        run.log(
            {media_key(f): wandb.Image(str(report.out / f), caption=c) for f, c in report.figures}
        )
        run.summary["headline"] = [headline_text(h) for h in report.headline]


def report_blocks(report, project: str, entity: str | None) -> list:
    """The Report's blocks (built without network access)."""
    import wandb_workspaces.reports.v2 as wr

    name = report.sweep_dir.name
    runset = wr.Runset(project=project, entity=entity or "", filters=f"Group = '{name}'")
    headline = [headline_text(h) for h in report.headline] or ["No tuned baseline in this sweep."]
    figures = [
        wr.MediaBrowser(title=c[:120], media_keys=[media_key(f)], num_columns=1)
        for f, c in report.figures
    ]
    live = [
        wr.LinePlot(title="validation loss", x="Step", y=["epoch/val_loss"]),
        wr.LinePlot(title="test accuracy", x="Step", y=["epoch/test_acc"]),
        wr.LinePlot(title="AGD eta", x="Step", y=["train/eta"]),
    ]
    scatter = [  # (y, x): the final metric against a config key, log-log
        ("val_loss", "optimizer.lr"),
        ("test_loss", "model.width"),
        ("test_loss", "model.depth"),
    ]
    live += [
        wr.ScatterPlot(
            title=f"final {y.replace('_', ' ')} vs {x.rsplit('.', 1)[-1]}",
            x=wr.Config(x),
            y=wr.SummaryMetric(y),
            log_x=True,
            log_y=True,
        )
        for y, x in scatter
    ]
    return [
        wr.H1(text=f"agd-ray sweep {name}"),
        wr.H2(text="Headline: AGD's single untuned run against each tuned baseline"),
        wr.MarkdownBlock(
            text="\n\n".join(headline) + "\n\nBaselines are tuned on the "
            "validation split and scored on the test split; compute includes "
            "each baseline's whole grid."
        ),
        wr.H2(text="Figures of the report"),
        wr.PanelGrid(
            runsets=[
                wr.Runset(project=project, entity=entity or "", filters=f"Name = '{name}-report'")
            ],
            panels=figures,
        ),
        wr.H2(text="The sweep's runs"),
        wr.PanelGrid(runsets=[runset], panels=live),
        wr.H2(text="Fitted laws"),
        wr.MarkdownBlock(text=_markdown_fits(report.fits)),
    ]


def _markdown_fits(fits: dict) -> str:
    header, rows = fit_rows(fits)
    if not rows:
        return "No law fitted."
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def publish(name: str, project: str, entity: str | None, report) -> str:
    import wandb_workspaces.reports.v2 as wr

    log_figures(report, project, entity)
    kwargs = {"entity": entity} if entity else {}
    doc = wr.Report(
        project=project,
        title=f"agd-ray: {name}",
        description="AGD scaling study (agd-ray report)",
        blocks=report_blocks(report, project, entity),
        **kwargs,
    )
    doc.save()
    return doc.url
