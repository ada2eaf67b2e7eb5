"""``sumseg pseudo-label`` and ``sumseg uncertainty``: each loads its section of the config tree
(``--config FILE.yaml``, then the flags given over it; :mod:`sumseg.config.pseudo_label`,
:mod:`sumseg.config.uncertainty`) and calls its one run function. Registered on :data:`sumseg.cli.app`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.29 vendors its own click; older typers use the click package
    from typer._click.core import ParameterSource
    from typer._click.exceptions import MissingParameter
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.core import ParameterSource  # type: ignore[no-redef,assignment]
    from click.exceptions import MissingParameter  # type: ignore[no-redef,assignment]

from sumseg.cli import MODEL_HELP, _errors, _foundation, app
from sumseg.config.pseudo_label import PSEUDO_LABEL_KEYS, PseudoLabelConfig
from sumseg.config.uncertainty import UNCERTAINTY_KEYS, UncertaintyConfig


def _given(ctx: typer.Context, config: Path | None, keys: Mapping[str, str],
           required: Sequence[str]) -> dict[str, tuple[str, Any]]:
    """Key → (flag, value) of each flag of ``keys`` (parameter → config key) given on the command line, the
    flags over ``--config``; without ``--config`` a ``required`` flag left out is click's usage error."""
    params = {p.name: p for p in ctx.command.params}
    missing = [params[name] for name in required if config is None and ctx.params[name] is None]
    if missing:
        raise MissingParameter(ctx=ctx, param=missing[0])  # type: ignore[arg-type]
    return {key: (params[name].opts[0], str(v) if isinstance(v := ctx.params[name], Path) else v)
            for name, key in keys.items() if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}


_PL, _UN = PseudoLabelConfig(), UncertaintyConfig()  # the defaults the flags show (written once, in sumseg/config)
_A = _PL.amg  # the generator's settings
CONFIG_HELP = "YAML file of this command's settings; the flags given go over it (docs/pseudo-labels.md)"


@app.command("pseudo-label")
def pseudo_label(
    ctx: typer.Context,
    images: Annotated[Path | None, typer.Option(help="unlabelled images: an image folder or any readable dataset "
                                                "(needed: here or in --config)")] = None,
    out: Annotated[Path | None, typer.Option(help="pseudo-label store folder (docs/pseudo-labels.md; needed)")] = None,
    config: Annotated[Path | None, typer.Option(help=CONFIG_HELP)] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = _PL.model,
    checkpoint: Annotated[Path | None, typer.Option(help="foundation model weights")] = None,
    points_per_side: Annotated[int, typer.Option(help="point grid side (1-128)")] = _A.points_per_side,
    points_per_batch: Annotated[int, typer.Option(help="grid points per decoder call")] = _A.points_per_batch,
    iou_thresh: Annotated[str, typer.Option(help="keep predicted IoU > this; qX = quantile X of the scores")
                          ] = _A.pred_iou_thresh,
    stability_thresh: Annotated[str, typer.Option(help="keep stability >= this; qX = quantile")
                                ] = _A.stability_score_thresh,
    stability_offset: Annotated[float, typer.Option(help="stability score logit offset")] = _A.stability_score_offset,
    nms_thresh: Annotated[float, typer.Option(help="box NMS IoU threshold")] = _A.box_nms_thresh,
    max_area_ratio: Annotated[float, typer.Option(help="drop masks covering >= this fraction (>1: off)")
                              ] = _A.max_area_ratio,
    min_area_ratio: Annotated[float, typer.Option(help="drop masks covering < this fraction (0: off)")
                              ] = _A.min_area_ratio,
    max_per_image: Annotated[int | None, typer.Option(help="keep at most N masks per image")] = _A.max_per_image,
    calibration_images: Annotated[int, typer.Option(help="images for quantile thresholds (0: all)")
                                  ] = _A.calibration_images,
    shard: Annotated[str | None, typer.Option(help="i/N: label every N-th image from the i-th")] = _PL.shard,
    cache: Annotated[Path | None, typer.Option(help="embedding cache folder (float16 embeddings)")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = _PL.device,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = _PL.progress,
) -> None:
    """Automatic-mask-generator pseudo-labels of unlabelled images (resumable, shardable)."""
    from sumseg.config import load_pseudo_label_config
    from sumseg.data.embedding_cache import EmbeddingCache
    from sumseg.pipeline.pseudo_label_run import few_masks_warning, format_summary, run_pseudo_labels
    from sumseg.pipeline.store import Shard
    from sumseg.train.distributed import resolve_device

    flags = _given(ctx, config, PSEUDO_LABEL_KEYS, ("images", "out"))
    with _errors():
        cfg = load_pseudo_label_config(config, flags)
        Shard.parse(cfg.shard)  # refused before the model is built
        dev = resolve_device(cfg.device, key="--device")
        net = _foundation(cfg.model, None if cfg.checkpoint is None else Path(cfg.checkpoint)).to(dev)
        emb_cache = EmbeddingCache(Path(cfg.cache), net.cache_encoder()) if cfg.cache is not None else None
        summary = run_pseudo_labels(net, cfg, emb_cache)
    typer.echo(format_summary(summary))
    warning = few_masks_warning(summary)
    if warning:
        typer.secho(warning, fg=typer.colors.YELLOW, err=True)


@app.command()
def uncertainty(
    ctx: typer.Context,
    pseudo_labels: Annotated[Path | None, typer.Option(help="pseudo-label store made by sumseg pseudo-label "
                                                       "(needed: here or in --config)")] = None,
    refiner: Annotated[Path | None, typer.Option(help="refiner checkpoint (sumseg refiner train; needed)")] = None,
    config: Annotated[Path | None, typer.Option(help=CONFIG_HELP)] = None,
    show: Annotated[int, typer.Option(help="write overlay PNGs of the first N masks")] = _UN.show,
    shard: Annotated[str | None, typer.Option(help="i/N: every N-th image of the store from the i-th")] = _UN.shard,
    cache: Annotated[Path | None, typer.Option(help="embedding cache folder of the refiner's encoder")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = _UN.device,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = _UN.progress,
) -> None:
    """Refiner inference on every pseudo-label → U = |σ(s) − σ(r)| maps beside the labels (resumable)."""
    from sumseg.config import load_uncertainty_config
    from sumseg.data.embedding_cache import EmbeddingCache
    from sumseg.models.checkpoint import build_model
    from sumseg.pipeline.store import Shard
    from sumseg.pipeline.uncertainty import run_uncertainty
    from sumseg.train.distributed import resolve_device

    flags = _given(ctx, config, UNCERTAINTY_KEYS, ("pseudo_labels", "refiner"))
    with _errors():
        cfg = load_uncertainty_config(config, flags)
        Shard.parse(cfg.shard)  # refused before the refiner is built
        dev = resolve_device(cfg.device, key="--device")
        net = build_model(None, Path(cfg.refiner or "")).to(dev)
        emb_cache = EmbeddingCache(Path(cfg.cache), net.cache_encoder()) if cfg.cache is not None else None
        s = run_uncertainty(net, cfg, emb_cache)
    typer.echo(f"U maps: {s.images_done} of {s.images} images ({s.computed_now} computed by this run), "
               f"{s.masks} masks, mean U {s.mean_u:.4f}")
    if s.overlays:
        typer.echo(f"wrote {len(s.overlays)} overlay(s) to {s.overlays[0].parent}")
