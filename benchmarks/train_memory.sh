#!/bin/bash
# Peak memory (max RSS) of one `sumseg train` step at 1024 px per model and mode, on CPU, random weights
# (docs/models.md, "Memory per training mode"). Usage: bash benchmarks/train_memory.sh [OUT_DIR]
set -u
cd "$(dirname "$0")/.."
OUT=${1:-out/train-memory}
mkdir -p "$OUT"
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
.venv/bin/python -c "
from sumseg.data.synthetic_world import SPLITS, write_world
write_world('$OUT/world', seed=0, sizes={s: 0 for s in SPLITS} | {'task1_train': 2}, image_size=1024, workers=1,
            progress=False)"
for model in sam2.1_hiera_t sam2.1_hiera_b+ vit_b; do
  for mode in decoder lora full; do
    rm -rf "$OUT/run"
    /usr/bin/time -f "%M KB max RSS, %e s wall, %U s user" .venv/bin/sumseg train --config configs/tiny_sum.yaml \
      model.name=$model model.checkpoint=null method=vanilla mode=$mode \
      "data.labelled=[{path: $OUT/world/task1_train, task: 1}]" data.pseudo_labels=null data.refiner=null \
      data.images_per_step=1 data.masks_per_image=2 rounds.corrections=1 optim.steps=1 optim.warmup=0 \
      run.out="$OUT/run" run.save_every=1 run.progress=false > "$OUT/$model-$mode.out" 2> "$OUT/$model-$mode.err"
    echo "$model $mode rc=$? $(tail -1 "$OUT/$model-$mode.err")"
  done
done
