#!/usr/bin/env python3
"""Logits of token chunks for several model folders (dense or pre-pruned), with model.py on the CPU.

The torch evaluator of tools/sparse-quality.mjs (--evaluator torch): the same chunks the GPU engine would
run (each chunk from an empty cache), written as raw little-endian float32 [rows, vocab] per model, in the
order the chunks come. A pre-pruned folder (`webmoe prune`, src/sparse/tensors.ts) is unpacked by
recover.py's unpack_sparse to exactly the dense matrices the runtime unpacks; model.py is the model the
runtime's reference fixture comes from (make_ref.py; check_reference.py ties it to DeepSeek's code).

  /usr/bin/python3 tools/train/score_logits.py --ids ids.u16 --chunk 128 --out DIR MODEL_DIR...
writes DIR/0.f32, DIR/1.f32, ... (one per MODEL_DIR).
"""
import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recover import load_pruned  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", required=True, help="uint16 token ids")
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--out", required=True)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ids = np.fromfile(a.ids, dtype=np.uint16).astype(np.int64)
    os.makedirs(a.out, exist_ok=True)
    for mi, d in enumerate(a.models):
        model, _, _ = load_pruned(d)
        model.eval()
        parts = []
        with torch.no_grad():
            for i in range(0, len(ids) - 1, a.chunk):
                part = torch.from_numpy(ids[i:i + a.chunk])[None]
                parts.append(model(part)[0].float().numpy())
        np.concatenate(parts).astype("<f4").tofile(os.path.join(a.out, f"{mi}.f32"))
        print(f"{mi} {d}", flush=True)


if __name__ == "__main__":
    main()
