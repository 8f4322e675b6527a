#!/usr/bin/env bash
# Issue 14's GPU rows in one go, for a lent GPU machine (about 5 minutes on an H100/H200 with
# 16 cores; nothing is downloaded): the card is named, then
#   - the NVDEC test (skipped with its reason where torchcodec's CUDA decoder cannot run),
#   - encoder alone, pure decoding and `index` with N = 1, 4, 8, cores-1 decoding processes,
#     for a CLIP ViT-L/14-shaped encoder (random weights) in bf16 on 32 x 60 s 1280x720 30 fps
#     H.264 clips sampled at 1 fps (1 920 frames), PyAV and (where it runs) NVDEC,
#   - the table, and what bounds the pipeline. JSON under $OUT (or benchmarks/out/).
# Without a CUDA device it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/out}"
mkdir -p "$OUT_DIR"
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device here: GPU rows skipped"; exit 0
fi
python3 -c "import torch; print('card:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
python3 -m pytest -q -rs tests/test_index_parallel.py -k nvdec || true
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")
python3 benchmarks/index.py scale --clips "${CLIPS:-32}" --seconds "${SECONDS_PER_CLIP:-60}" --size 1280x720 \
  --encoder clip-l14 --device cuda --batch 256 --workers 1 4 8 $((CORES - 1)) --decoders pyav nvdec \
  --json "$OUT_DIR/index_scale_gpu.json"
