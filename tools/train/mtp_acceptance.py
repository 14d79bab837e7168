#!/usr/bin/env python3
"""Held-out acceptance of a model's MTP module as a self-speculative draft (issue #18).

Loads the *exported* model (config.json + model.safetensors, stored F16 widened exactly to F32, so these
are the weights the runtime loads) and scores every non-overlapping 258-token window of the held-out
split, teacher-forced: at position i the MTP module sees the main model's final-norm hidden state of
token i and the embedding of token i+1 and drafts token i+2.

  greedy_accept  P(argmax MTP(i) == argmax main(i+1)): the acceptance of greedy decoding's draft
  sample_accept  E[p_main(i+1)(argmax MTP(i))]: the acceptance when the main model samples at
                 temperature 1 (the draft is the MTP's argmax, accepted iff the sample equals it)
  overlap        E[sum_v min(p_main(i+1)(v), q_mtp(i)(v))]: what a sampled draft would reach
  top1 / loss    MTP accuracy and cross-entropy against the true token i+2

Teacher forcing feeds the true token i+1; in decoding it is the model's own token, so the runtime's
acceptance differs (the bench and `webmoe generate` report that one).

  /usr/bin/python3 tools/train/mtp_acceptance.py --model public/models/webmoe-tiny --data /work/train-data
"""
import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf_model  # noqa: E402


@torch.no_grad()
def acceptance(model, held, seq=256, max_windows=None):
    n = (len(held) - 2) // seq
    if max_windows:
        n = min(n, max_windows)
    tot = {"loss": 0.0, "top1": 0, "greedy_accept": 0, "sample_accept": 0.0, "overlap": 0.0}
    cnt, cnt_acc = 0, 0
    for i in range(0, n, 8):
        b = torch.from_numpy(np.stack([held[j * seq:j * seq + seq + 2] for j in range(i, min(n, i + 8))]).astype(np.int64))
        logits, hidden = model(b[:, :seq], return_hidden=True)
        ml = model.mtp_logits(b[:, 1:seq + 1], hidden)
        tgt = b[:, 2:seq + 2]
        tot["loss"] += F.cross_entropy(ml.reshape(-1, ml.size(-1)), tgt.reshape(-1), reduction="sum").item()
        tot["top1"] += (ml.argmax(-1) == tgt).sum().item()
        cnt += tgt.numel()
        q = ml[:, :-1]
        p = torch.softmax(logits[:, 1:], -1)
        draft = q.argmax(-1)
        tot["greedy_accept"] += (draft == logits[:, 1:].argmax(-1)).sum().item()
        tot["sample_accept"] += p.gather(-1, draft[..., None]).sum().item()
        tot["overlap"] += torch.minimum(torch.softmax(q, -1), p).sum(-1).sum().item()
        cnt_acc += draft.numel()
    return {"windows": n, "positions": cnt_acc, "loss": tot["loss"] / cnt, "top1": tot["top1"] / cnt,
            "greedy_accept": tot["greedy_accept"] / cnt_acc, "sample_accept": tot["sample_accept"] / cnt_acc,
            "overlap": tot["overlap"] / cnt_acc}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="public/models/webmoe-tiny")
    ap.add_argument("--data", default="/work/train-data")
    ap.add_argument("--max-windows", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_hf_model(a.model)
    if not len(model.mtp_layers):
        sys.exit(f"{a.model}: no MTP layer (num_nextn_predict_layers 0 or no model.layers.<L>.eh_proj)")
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16)
    print(json.dumps(acceptance(model, held, max_windows=a.max_windows)))


if __name__ == "__main__":
    main()
