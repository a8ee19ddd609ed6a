#!/usr/bin/env bash
# Reduced-protocol n-body runs (issue 4): 3000/2000/2000 simulations, Adam, batch 100, weight decay 1e-12,
# EPOCHS epochs (protocol: up to 10000), validation every 5 epochs, test MSE at the best validation epoch.
# Seeds outer, models inner, so that partial results cover every model. Resumable: run this script again
# (every call uses --resume; finished runs are skipped, killed ones continue from their last checkpoint).
# Raise EPOCHS and rerun to extend finished runs (resume continues up to the new total).
set -u
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-500}
for seed in 0 1 2; do
  for model in egnn tf-gnn gnn linear fa-gnn; do
    nice -n 10 .venv/bin/python -m equiframe train nbody --model "$model" --epochs "$EPOCHS" --seeds "$seed" \
      --eval-every 5 --eval-batch-size 500 --checkpoint-every 10 --threads 1 --out runs --resume --device cpu \
      || echo "FAILED: $model seed $seed"
  done
  # FA at every layer (the FA paper's released n-body architecture)
  nice -n 10 .venv/bin/python -m equiframe train nbody --model fa-gnn --fa-variant layerwise --epochs "$EPOCHS" \
    --seeds "$seed" --eval-every 5 --eval-batch-size 500 --checkpoint-every 5 --threads 1 --out runs --resume \
    --device cpu || echo "FAILED: fa-gnn layerwise seed $seed"
done
.venv/bin/python -m equiframe report runs --out runs/report.md > /dev/null && echo "report: runs/report.md"
