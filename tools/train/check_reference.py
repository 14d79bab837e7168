#!/usr/bin/env python3
"""Check model.py against the official DeepSeek-V3 reference fixture (float32 logits + routing).

  /usr/bin/python3 tools/train/check_reference.py [/work/shared/fixtures/deepseek-v3-tiny]
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf_model  # noqa: E402


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures/deepseek-v3-tiny"
    torch.set_num_threads(1)
    m = load_hf_model(d)
    t = json.load(open(os.path.join(d, "tokens.json")))
    with torch.no_grad():
        lg = m(torch.tensor([t["tokens"]]))[0].numpy()
    ref = np.fromfile(os.path.join(d, "logits_prefill_absorb.f32.bin"), dtype=np.float32).reshape(lg.shape)
    diff = float(np.abs(lg - ref).max())
    print(f"logits max |diff| {diff:.2e} (reference std {ref.std():.2f})")
    ok = diff < 1e-4
    r = json.load(open(os.path.join(d, "routing.json")))["runs"]["prefill_absorb"]
    for li, mm in m.moe_layers():
        ours = mm.last_indices.numpy()
        theirs = np.array(r[str(li)]["indices"])
        same = all(set(a) == set(b) for a, b in zip(ours, theirs))
        wd = float(np.abs(mm.last_weights.numpy() - np.array(r[str(li)]["weights"])).max())
        print(f"layer {li}: expert sets equal {same}, weights max |diff| {wd:.2e}")
        ok = ok and same and wd < 1e-5
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
