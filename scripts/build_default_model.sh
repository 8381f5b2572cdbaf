#!/usr/bin/env bash
# Rebuilds the shipped default model from Flickr8k in one command: Lite2 grid features, the
# attention decoder with cross-entropy, then self-critical training (CIDEr-D reward).
#
#   bash scripts/build_default_model.sh [FLICKR8K_DIR] [RUN_DIR]
#
# Prints each stage's wall time; the model ends up in RUN_DIR/model, with int8 weights. Copy it
# into src/captioner/pretrained/flickr8k-attention (keeping that folder's README.md) to ship it.
set -euo pipefail
data=${1:-../shared/flickr8k}
run=${2:-runs/default}
mkdir -p "$run"
stage() {  # stage NAME COMMAND...: runs a stage and prints its wall time
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  "$@"
  echo "== $name took $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
}
stage features captioner extract --data "$data" --encoder efficientnet_lite2 --spatial --cache-dir "$run/cache"
stage cross-entropy captioner train --preset flickr8k-attention --data "$data" --cache-dir "$run/cache" --output "$run/ce" --no-progress
stage self-critical captioner train --scst --init "$run/ce" --output "$run/scst" --learning-rate 1e-5 --limit-images 1200 --epochs 4 --no-progress
stage int8 captioner export "$run/scst/model" "$run/model" --format captioner --quantize
echo "== total $((SECONDS / 60)) min $((SECONDS % 60)) s; model: $run/model"
