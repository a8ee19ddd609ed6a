#!/usr/bin/env bash
# Full-protocol n-body runs (issue 17): up to 10 000 epochs, early stopping after PATIENCE validations (every 5
# epochs) without improvement, test MSE at the best validation epoch; one core, the two runs alternating in chunks
# so that both advance:
#   * FA-GNN, layer-wise, stochastic training frames (full-frame evaluation), seed 0, continuing its 250-epoch
#     run (+FA_CHUNK epochs per turn);
#   * TF-GNN (32x0n+8x1n), seed 0, continuing its 2000-epoch run (+TF_CHUNK epochs per turn).
# Resumable: run it again. The first call seeds OUT with the checkpoints at which the two runs were stopped
# (FA-GNN epoch 550, TF-GNN epoch 2500; their results are under results/nbody/<run>/seed0/): they were tracked
# under results/nbody/<run>/seed0/checkpoint.pt until commit d7ffcc1 and are restored from git history
# (once; later calls continue from OUT's own checkpoints).
#   OUT=runs_long benchmarks/nbody_long.sh          # from the repository root
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs_long}
PATIENCE=${PATIENCE:-200}
FA_CHUNK=${FA_CHUNK:-50}
TF_CHUNK=${TF_CHUNK:-100}
PY=${PY:-python}
CKPT_COMMIT=d7ffcc1
FA=fa-gnn-layerwise-stochastic-long@egnn-small
TF=tf-gnn-long@egnn-small
for run in "$FA" "$TF"; do
  if [ ! -e "$OUT/nbody/$run/seed0/checkpoint.pt" ]; then
    mkdir -p "$OUT/nbody/$run/seed0" \
      && git show "$CKPT_COMMIT:results/nbody/$run/seed0/checkpoint.pt" > "$OUT/nbody/$run/seed0/checkpoint.pt" \
      && git show "$CKPT_COMMIT:results/nbody/$run/seed0/curves.csv" > "$OUT/nbody/$run/seed0/curves.csv" \
      || { rm -f "$OUT/nbody/$run/seed0/checkpoint.pt"; echo "no checkpoint of $run in commit $CKPT_COMMIT"; exit 1; }
  fi
done
epochs_of() {  # epochs done so far (the checkpoint's last epoch)
  $PY - "$1" <<'PY'
import sys, torch
print(torch.load(sys.argv[1], map_location="cpu", weights_only=False)["epoch"])
PY
}
COMMON=(--seeds 0 --eval-every 5 --eval-batch-size 500 --threads 1 --out "$OUT" --resume --device cpu
        --patience "$PATIENCE")
while :; do
  fa=$(( $(epochs_of "$OUT/nbody/$FA/seed0/checkpoint.pt") + FA_CHUNK )); fa=$(( fa > 10000 ? 10000 : fa ))
  tf=$(( $(epochs_of "$OUT/nbody/$TF/seed0/checkpoint.pt") + TF_CHUNK )); tf=$(( tf > 10000 ? 10000 : tf ))
  nice -n 10 $PY -m equiframe train nbody --model fa-gnn --fa-variant layerwise --fa-mode stochastic --epochs "$fa" \
    --checkpoint-every 5 --name "$FA" "${COMMON[@]}" || echo "FAILED: $FA"
  nice -n 10 $PY -m equiframe train nbody --model tf-gnn --epochs "$tf" --checkpoint-every 10 --name "$TF" \
    "${COMMON[@]}" || echo "FAILED: $TF"
  # stop when both are done (10 000 epochs or stopped early)
  $PY - "$OUT/nbody/$FA/seed0/checkpoint.pt" "$OUT/nbody/$TF/seed0/checkpoint.pt" <<'PY' && break
import sys, torch
done = [(c["stopped_early"] or c["epoch"] >= 10000) for c in
        (torch.load(p, map_location="cpu", weights_only=False) for p in sys.argv[1:])]
sys.exit(0 if all(done) else 1)
PY
done
