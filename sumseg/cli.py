"""The ``sumseg`` command: one thin function per subcommand, logic lives in the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sumseg.errors import SumsegError

app = typer.Typer(help="Uncertainty-aware fine-tuning of Segment Anything (SUM).", no_args_is_help=True)
refiner_app = typer.Typer(help="Mask-refinement module (refiner).", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: inspect readable data, write the synthetic world.", no_args_is_help=True)
app.add_typer(refiner_app, name="refiner")
app.add_typer(data_app, name="data")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _not_built(command: str, issue: str) -> None:
    typer.secho(f"`sumseg {command}` is not built yet ({issue}).", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(2)


@app.command("pseudo-label")
def pseudo_label() -> None:
    """Automatic-mask-generator pseudo-labels of unlabelled images (not built yet)."""
    _not_built("pseudo-label", "pseudo-label issue")


@refiner_app.command("train")
def refiner_train() -> None:
    """Train the mask-refinement module on human-labelled masks (not built yet)."""
    _not_built("refiner train", "refiner issue")


@app.command()
def uncertainty() -> None:
    """Refiner inference on pseudo-labels → uncertainty / confidence maps (not built yet)."""
    _not_built("uncertainty", "uncertainty issue")


@app.command()
def train() -> None:
    """Uncertainty-aware interactive fine-tuning (not built yet)."""
    _not_built("train", "trainer issue")


@app.command()
def pretrain() -> None:
    """Train the tiny foundation checkpoint on the synthetic world (not built yet)."""
    _not_built("pretrain", "pretrain issue")


@app.command("eval")
def eval_() -> None:
    """Interactive evaluation (clicks / box protocols) on readable datasets (not built yet)."""
    _not_built("eval", "evaluation issue")


@app.command()
def demo() -> None:
    """The embedded default: the whole pipeline on built-in data (not built yet)."""
    _not_built("demo", "demo issue")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="sumseg checkpoint to export")],
    task: Annotated[int, typer.Option(help="task id whose prompt is folded into the weights")],
    out: Annotated[Path, typer.Option(help="output .pth (a plain state_dict for the stock loader)")],
    verify: Annotated[bool, typer.Option(help="reload with the stock loader and compare predictions")] = True,
) -> None:
    """Write a stock SAM state_dict with task prompt TASK folded in."""
    from sumseg.models.export import export_checkpoint

    try:
        name, diff = export_checkpoint(checkpoint, task, out, verify=verify)
    except SumsegError as e:
        _fail(e)
    typer.echo(f"wrote {out} (model {name}, task {task}); load it with the stock SAM builder for {name}")
    if diff is not None:
        typer.echo(f"verified: stock predictions equal sumseg's task-{task} predictions (max |logit diff| {diff:.2e})")
