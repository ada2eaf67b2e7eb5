"""The ``sumseg`` command: one thin function per subcommand, logic lives in the library."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from sumseg.config.checker import refuse_bad
from sumseg.errors import ConfigError, cli_error

# Plain help (click's formatter): rich's option table truncates long flag names at 80 columns
# ("--points-per-si…"); click's wraps the help text and never cuts a name. tests/test_cli.py checks it.
app = typer.Typer(help="Uncertainty-aware fine-tuning of Segment Anything (SUM).", no_args_is_help=True,
                  rich_markup_mode=None)
refiner_app = typer.Typer(help="Mask-refinement module (refiner).", no_args_is_help=True, rich_markup_mode=None)
data_app = typer.Typer(help="Datasets: inspect readable data, write the synthetic world.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(refiner_app, name="refiner")
app.add_typer(data_app, name="data")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@contextmanager
def _errors() -> Iterator[None]:
    """A command's work: a SumsegError or an OS write error (:func:`sumseg.errors.cli_error`) ends it
    with one ``error:`` line and exit status 1; anything else is a bug and keeps its traceback."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - cli_error decides; the rest is re-raised
        err = cli_error(e)
        if err is None:
            raise
        _fail(err)


def _check_model(model: str | None, checkpoint: Path | None) -> None:
    """The rule every command shares for --model / --checkpoint (before any output is made)."""
    from sumseg.model_names import model_problems

    problems = model_problems(model, checkpoint, ("--model", "--checkpoint"))
    if problems:
        raise ConfigError("; ".join(m for _, m in problems))


def _foundation(model: str | None, checkpoint: Path | None):  # noqa: ANN202 - a SumSam (torch imported late)
    """``build_model(model, checkpoint)`` under the rule every command shares, worded with the flags."""
    from sumseg.models.checkpoint import build_model

    _check_model(model, checkpoint)
    return build_model(model, checkpoint)


MODEL_HELP = ("registry name (vit_b, tiny, sam2.1_hiera_b+, ...) or tiny_foundation (shipped weights); optional for a "
              "sumseg checkpoint")


# pseudo-label and uncertainty (their sections of the config tree, --config and flags) live beside: here, so
# that the help lists them in this order; they use _errors, _foundation and MODEL_HELP above
from sumseg import cli_pipeline  # noqa: E402, F401 - registers the commands


def _run_training(load: Callable[[], Any], run: Callable[[Any], dict]) -> tuple[Any, dict] | None:
    """Load a config and train it; None on ranks other than 0 (torchrun) and when there was nothing to do."""
    with _errors():
        cfg = load()
        row = run(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return None
    if not row:
        typer.echo(_nothing_to_do(Path(cfg.run.out) / "last.ckpt", cfg.optim.steps))
        return None
    return cfg, row


def _nothing_to_do(ckpt: Path, steps: int) -> str:
    """What a rerun of a finished run says: the steps in its checkpoint, counted as the user counts them."""
    from sumseg.models.checkpoint import read_meta

    meta = read_meta(ckpt)
    done = steps if meta is None else meta.step + 1
    if done > steps:
        return (f"{ckpt} is already trained: {done} steps, more than optim.steps = {steps}; nothing to do "
                "(another run.out trains a new run)")
    return f"{ckpt} is already trained: {done} of {steps} steps; nothing to do"


def _steps_done(row: dict, steps: int) -> str:
    """``"N of M steps done"`` for the last logged row (its ``step`` is the 0-based index)."""
    return f"{int(row.get('step', -1)) + 1} of {steps} steps done"


@refiner_app.command("train")
def refiner_train(
    config: Annotated[Path | None, typer.Option(help="refiner YAML (configs/refiner_*.yaml, docs/refiner.md)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value settings over the YAML")] = None,
) -> None:
    """Train the mask-refinement module on human-labelled masks (resumable: rerun to continue)."""
    from sumseg.config import load_refiner_config
    from sumseg.train.refiner_run import gate_summary, train_refiner

    done = _run_training(lambda: load_refiner_config(config, overrides or []), train_refiner)
    if done is None:
        return
    cfg, row = done
    g = gate_summary(Path(cfg.run.out))
    typer.echo(f"refiner written to {Path(cfg.run.out) / 'last.ckpt'}: {_steps_done(row, cfg.optim.steps)}, "
               f"last loss {row.get('loss', float('nan')):.3f}; over the logged steps kept {g['kept']:.0%} of masks, "
               f"their IoU {g['input_iou']:.3f} -> {g['train_iou']:.3f}")
    if not g["kept"] > 0:
        typer.secho("no mask passed the gate in any logged step: lower inputs.min_iou or use a stronger "
                    "foundation model (docs/refiner.md)", fg=typer.colors.YELLOW, err=True)


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="YAML config (configs/*.yaml, docs/training.md)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value settings over the YAML, "
                                                         "e.g. method=vanilla optim.lr=1e-4")] = None,
) -> None:
    """Uncertainty-aware interactive fine-tuning (resumable: rerun the same command to continue)."""
    from sumseg.config import load_config
    from sumseg.train.train_run import train as run_train

    done = _run_training(lambda: load_config(config, overrides or []), run_train)
    if done is None:
        return
    cfg, row = done
    typer.echo(f"trained to {Path(cfg.run.out) / 'last.ckpt'}: {_steps_done(row, cfg.optim.steps)}, "
               f"loss {row.get('loss', float('nan')):.3f}, train IoU {row.get('train_iou', float('nan')):.3f}")


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="run folder (world/, last.ckpt, metrics.jsonl); rerun to resume")],
    steps: Annotated[int | None, typer.Option(help="training steps (default: PretrainConfig.steps)")] = None,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the tiny foundation model on the synthetic world's general masks (resumable)."""
    from dataclasses import replace

    from sumseg.config.pretrain import PretrainConfig, check_pretrain_options
    from sumseg.train.pretrain_run import pretrain as run_pretrain

    with _errors():
        refuse_bad(lambda c: check_pretrain_options(c, steps, seed))
        cfg = replace(PretrainConfig(seed=seed), steps=steps or PretrainConfig.steps)
        row = run_pretrain(out, cfg, progress)
    if not row:
        typer.echo(_nothing_to_do(out / "last.ckpt", cfg.steps))
        return
    typer.echo(f"pretrained to {out / 'last.ckpt'}: {_steps_done(row, cfg.steps)}, "
               f"loss {row.get('loss', float('nan')):.3f}")


@app.command("eval")
def eval_(
    datasets: Annotated[str, typer.Option(help="comma-separated dataset paths or names in --benchmarks-dir")],
    out: Annotated[Path, typer.Option(help="output folder (results.json, results.md, plot, overlays)")],
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="sumseg checkpoint, official SAM .pth or export")] = None,
    task: Annotated[str | None, typer.Option(help="task prompt: an id, or 'auto' = each mask's task")] = None,
    task_prompt: Annotated[str, typer.Option(help="rounds with the task prompt: every, first")] = "every",
    protocol: Annotated[str, typer.Option(help="comma-separated: clicks, box")] = "clicks",
    rounds: Annotated[int, typer.Option(help="interaction rounds (clicks) per instance (1-1000)")] = 20,
    first_round: Annotated[str, typer.Option(help="round-1 output: oracle (best IoU of 3), score, single")] = "oracle",
    limit: Annotated[int | None, typer.Option(help="only the first N instances per dataset")] = None,
    benchmarks_dir: Annotated[Path | None, typer.Option(help="where dataset names are looked up")] = None,
    skip_bad: Annotated[bool, typer.Option(help="skip unreadable items (listed in results.md)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Interactive evaluation (clicks / box protocols) of a model on readable datasets."""
    from sumseg.evaluate import run as er
    from sumseg.evaluate.interactive import FirstRound
    from sumseg.evaluate.report import REPORT_DIRS, REPORT_FILES
    from sumseg.outputs import output_dir

    specs = [d.strip() for d in datasets.split(",") if d.strip()]
    if not specs:
        raise typer.BadParameter(f"names no dataset ({datasets!r})", param_hint="--datasets")
    with _errors():
        if first_round not in get_args(FirstRound):
            raise ConfigError(f"--first-round must be one of {', '.join(get_args(FirstRound))}, not {first_round!r}")
        task_arg: int | str | None = task if task in (None, "auto") else _task_id(task)
        refuse_bad(lambda c: er.check_eval_options(c, rounds, limit, task_arg, keys=er.EVAL_FLAGS))
        _check_model(model, checkpoint)  # a bad name is refused before --out is made
        paths = er.resolve_datasets(specs, benchmarks_dir or er.default_benchmarks_dir())
        settings = er.EvalSettings(tuple(protocol.split(",")), rounds, first_round, task_arg,  # type: ignore[arg-type]
                                   limit, skip_bad=skip_bad, task_rounds=task_prompt)  # type: ignore[arg-type]
        with output_dir(out, inputs=[*paths.values(), checkpoint], files=REPORT_FILES, dirs=REPORT_DIRS,
                        label="--out"):
            net = _foundation(model, checkpoint)
            data, skipped = er.evaluate(net, paths, settings, out, progress=progress)
    for ds, n in skipped.items():
        if n:
            typer.secho(f"{ds}: skipped {n} item(s), listed with the reasons in {out}/results.md",
                        fg=typer.colors.YELLOW)
    _echo_results(data)
    typer.echo(f"wrote {out}/results.json, instances.json, results.md, iou_vs_clicks.png, overlays/")


def _echo_results(data: dict) -> None:
    """One line per dataset × protocol of a results.json dict."""
    for ds, by_proto in data.items():
        for proto, r in by_proto.items():
            typer.echo(f"{ds} / {proto}: n={r['n']} NoC@85={r['noc85']} NoC@90={r['noc90']} "
                       f"mIoU@1={r['miou'][0]} mIoU@{len(r['miou'])}={r['miou'][-1]}")


def _task_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--task must be a task id (integer) or 'auto', not {text!r}") from None


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder (rerun to resume)")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="a ~2-minute version on a smaller world (what the tests run)")] = False,
    seeds: Annotated[int, typer.Option(help="fine-tuning seeds per method (mean ± spread; 1-100)")] = 1,
    foundation: Annotated[Path | None, typer.Option(help="sumseg checkpoint of the tiny foundation model "
                                                    "(default: the shipped tiny_foundation)")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated fine-tuning methods (default: all of "
                                                "vanilla, self_training, sum, sum_no_task, refined_labels; "
                                                "sum_true_u, SUM on the true U maps, is a diagnostic)")] = None,
    world_seed: Annotated[int, typer.Option(help="synthetic world: 0 = the test world, "
                                            "1 = the validation world the settings were chosen on")] = 0,
    workers: Annotated[int, typer.Option(help="processes for the stages, one thread each (0: this one; <= 256)")] = 2,
    benchmarks_dir: Annotated[Path | None, typer.Option(
        help="folder with GrabCut/ and Berkeley/ (default: $SUMSEG_BENCHMARKS or ../shared/benchmarks)")] = None,
) -> None:
    """The whole method on built-in data: pseudo-labels, refiner, uncertainty, fine-tuning, evaluation, report."""
    from sumseg.demo.pipeline import run_demo
    from sumseg.demo.report_md import main_table_text
    from sumseg.demo.settings import DEMO_FLAGS, check_demo_options, preset
    from sumseg.evaluate.run import default_benchmarks_dir

    with _errors():
        refuse_bad(lambda c: check_demo_options(c, seeds, workers, world_seed, DEMO_FLAGS))
        if benchmarks_dir is not None and not benchmarks_dir.is_dir():
            raise ConfigError(f"--benchmarks-dir {benchmarks_dir}: no such folder (leave it out to skip the real "
                              "benchmarks when ../shared/benchmarks is absent)")
        settings = preset(quick, seeds, methods.split(",") if methods else None, world_seed)
        result = run_demo(out, settings, foundation, workers, benchmarks_dir or default_benchmarks_dir(),
                          echo=typer.echo)
    typer.echo(main_table_text(result.report))
    typer.echo(f"report: {result.report_md} (numbers in {out / 'report.json'})")


@app.command()
def export(
    task: Annotated[int, typer.Option(help="task id whose prompt is folded into the weights")],
    out: Annotated[Path, typer.Option(help="output: a .pth (a plain state_dict for the stock loader), or with "
                                      "--format hf a folder (config.json + model.safetensors)")],
    checkpoint: Annotated[Path | None, typer.Option(help="sumseg checkpoint (a plain .pth: --model)")] = None,
    model: Annotated[str | None, typer.Option(help="registry name of a plain .pth, or tiny_foundation")] = None,
    verify: Annotated[bool, typer.Option(help="reload with the stock loader and compare predictions")] = True,
    tolerance: Annotated[float | None, typer.Option(help="largest |logit diff| --verify accepts "
                                                  "(default 1e-4)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="sam: segment_anything .pth; hf: a transformers SamModel "
                                     "folder (save_pretrained layout)")] = "sam",
) -> None:
    """Write a stock SAM state_dict (or SamModel folder) with task prompt TASK folded in (exit 1 if the check fails)."""
    from sumseg.models.export import DEFAULT_TOLERANCE, check_export_options, export_checkpoint, stock_loader

    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    with _errors():
        refuse_bad(lambda c: check_export_options(c, tolerance, "--tolerance"))
        if fmt not in ("sam", "hf"):
            raise ConfigError(f"--format must be sam or hf, got {fmt!r}")
        if fmt == "hf":
            from sumseg.models.hf_export import export_hf

            name, diff = export_hf(checkpoint, task, out, verify=verify, tolerance=tolerance, model=model)
        else:
            name, diff = export_checkpoint(checkpoint, task, out, verify=verify, tolerance=tolerance, model=model)
    hf_class = "Sam2Model" if name.startswith("sam2") else "SamModel"
    loader = f"transformers.{hf_class}.from_pretrained({str(out)!r})" if fmt == "hf" else stock_loader(name, out)
    typer.echo(f"wrote {out} (model {name}, task {task}); load it with {loader}")
    if diff is not None:
        typer.echo(f"verified: stock predictions equal sumseg's task-{task} predictions "
                   f"(max |logit diff| {diff:.2e} <= {tolerance:.0e})")


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="COCO json, SA-1B / RITM / mask / image folder")],
    decode: Annotated[bool, typer.Option(help="decode every image (catches truncated files)")] = False,
    strict: Annotated[bool, typer.Option(help="stop at the first problem, do not list")] = False,
) -> None:
    """Counts per split and task, a mask-size histogram, and the problems found (exit 1 if any)."""
    from sumseg.data.summary import format_summary, inspect_dataset

    with _errors():
        summary = inspect_dataset(path, decode=decode, skip_bad=not strict)
    typer.echo(format_summary(summary))
    if summary.problems:
        typer.secho(f"{len(summary.problems)} problem(s) found", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="output folder (one COCO split per subfolder)")],
    seed: Annotated[int, typer.Option(help="world seed")] = 0,
    pretrain: Annotated[int, typer.Option(help="images in 'pretrain'")] = 2000,
    unlabeled: Annotated[int, typer.Option(help="images in 'unlabeled'")] = 500,
    task_train: Annotated[int, typer.Option(help="images in each 'task<k>_train'")] = 32,
    test: Annotated[int, typer.Option(help="images in each 'task<k>_test' and 'general_test'")] = 64,
    image_size: Annotated[int, typer.Option(help="image side in pixels")] = 256,
    workers: Annotated[int, typer.Option(help="processes (0 = all cores; <= 256)")] = 0,
    shift_contrast: Annotated[float | None, typer.Option(
        help="draw the task and unlabelled splits in a target domain: contrast towards mid-grey, in (0, 1]")] = None,
    shift_noise: Annotated[float | None, typer.Option(
        help="... and Gaussian noise of this many grey levels (the demo's domain: 0.5 and 6)")] = None,
) -> None:
    """Write the synthetic world (resumable: identical images already on disk are not rewritten)."""
    from sumseg.data.synthetic import AppearanceShift
    from sumseg.data.synthetic_world import SYNTH_FLAGS, check_world_options, write_world
    from sumseg.outputs import output_dir

    sizes = {"pretrain": pretrain, "unlabeled": unlabeled, "general_test": test}
    sizes |= {f"task{k}_train": task_train for k in (1, 2, 3)} | {f"task{k}_test": test for k in (1, 2, 3)}
    flagged = {"pretrain": pretrain, "unlabeled": unlabeled, "task_train": task_train, "test": test}
    shift = None if shift_contrast is None and shift_noise is None else AppearanceShift(
        1.0 if shift_contrast is None else shift_contrast, 0.0 if shift_noise is None else shift_noise)
    with _errors():
        refuse_bad(lambda c: check_world_options(c, seed, flagged, image_size, workers, SYNTH_FLAGS, shift))
        with output_dir(out, label="--out"):
            summary = write_world(out, seed=seed, sizes=sizes, image_size=image_size, workers=workers or None,
                                  shift=shift)
    for split, s in summary.items():
        typer.echo(f"{split}: {s['images']} images, {s['annotations']} masks "
                   f"({s['written']} written, {s['unchanged']} unchanged)")
    typer.echo(f"wrote the synthetic world to {out}")
