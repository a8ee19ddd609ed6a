"""Write docs/layers.md: which torch_geometric.nn.conv layers TFConv supports, and how.

Usage: python benchmarks/layer_table.py [--check]

Every MessagePassing class exported by torch_geometric.nn.conv is built with generic arguments and wrapped
as TFConv(layer, "4x0n+2x1n+1x1p+1x2n") in d = 3 (see equiframe.nn.tensor_frames.survey). --check exits
with status 1 if the committed file differs (tests/test_tf_all_layers.py checks the same).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from equiframe.nn.tensor_frames.survey import layer_table, survey

OUT = Path(__file__).resolve().parents[1] / "docs" / "layers.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = survey(3)
    text = layer_table(rows)
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print("docs/layers.md is current" if same else "docs/layers.md is out of date")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    n_ok = sum(r.supported for r in rows)
    print(f"{OUT}: {n_ok} supported, {len(rows) - n_ok} refused of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
