#!/usr/bin/env python3
"""Add a trained MTP module (train_mtp.py checkpoint) to an exported model folder, in the DeepSeek-V3
release layout: model.layers.<num_hidden_layers>.{enorm, hnorm, eh_proj, <decoder block>, shared_head.norm}
appended to model.safetensors (the main model's tensors are kept byte for byte), and
num_nextn_predict_layers = 1 in config.json. Issue #18.

The release also stores copies of the shared embedding (`embed_tokens`) and output head
(`shared_head.head`); they equal the main model's here (it was frozen), and the 2 × 1.57 MB copies would
take the bundled model past its 20 MB limit, so they are left out: the runtime (and model.py) then use
the main model's tables, as README_WEIGHTS.md describes them ("shares parameters").

Then appends or replaces the model card's MTP section with the held-out acceptance (mtp_acceptance.py).
Run after export.py (which rewrites the card):

  /usr/bin/python3 tools/train/export_mtp.py --ckpt /work/train-ckpt/mtp/best.pt --train-state /work/train-ckpt/mtp/last.pt \
      --model public/models/webmoe-tiny --data /work/train-data
"""
import argparse
import json
import os
import re
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf_model  # noqa: E402
from st_io import load_safetensors, save_safetensors  # noqa: E402
from mtp_acceptance import acceptance  # noqa: E402

BEGIN, END = "<!-- mtp:begin -->", "<!-- mtp:end -->"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="/work/train-ckpt/mtp/best.pt")
    ap.add_argument("--train-state", default=None, help="checkpoint whose history goes into the card (default: --ckpt)")
    ap.add_argument("--model", default="public/models/webmoe-tiny")
    ap.add_argument("--data", default="/work/train-data")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ck = torch.load(a.ckpt, map_location="cpu")
    st = torch.load(a.train_state, map_location="cpu")["state"] if a.train_state else ck["state"]
    path = os.path.join(a.model, "model.safetensors")
    tensors, meta = load_safetensors(path)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    L = cfg["num_hidden_layers"]
    prefix = f"model.layers.{L}."
    tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix)}   # re-export replaces
    f16 = cfg.get("torch_dtype") == "float16"
    order = ["enorm.weight", "hnorm.weight", "eh_proj.weight"]
    sd = ck["mtp"]
    names = order + [k for k in sd if k not in order and not k.startswith("shared_head")] + ["shared_head.norm.weight"]
    for k in names:
        v = sd[k].float().numpy()
        keep32 = k.endswith("e_score_correction_bias") or not f16
        tensors[prefix + k] = v.astype(np.float32 if keep32 else np.float16)
    save_safetensors(path, tensors, meta)
    cfg["num_nextn_predict_layers"] = 1
    with open(os.path.join(a.model, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    size = os.path.getsize(path)
    n_mtp = sum(int(np.prod(tensors[prefix + k].shape)) for k in names if not k.endswith("e_score_correction_bias"))
    print(f"MTP layer {L}: {len(names)} tensors, {n_mtp} parameters -> {path} ({size / 1e6:.2f} MB)")

    model = load_hf_model(a.model)
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16)
    acc = acceptance(model, held)
    print(json.dumps(acc))
    card(a, cfg, ck, st, acc, size, n_mtp, len(names))


def card(a, cfg, ck, st, acc, size, n_mtp, n_tensors):
    p = os.path.join(a.model, "README.md")
    text = open(p).read()
    text = re.sub(r"- `model.safetensors`: [0-9.]+ MB", f"- `model.safetensors`: {size / 1e6:.2f} MB (with the MTP layer)", text)
    args = ck["args"]
    ev = [e for e in st["eval"]]
    rows = "\n".join(f"| {s} | {e['loss']:.3f} | {e['top1'] * 100:.1f}% | {e['greedy_accept'] * 100:.1f}% |" for s, e in ev)
    L = cfg["num_hidden_layers"]
    sec = f"""{BEGIN}
## Multi-Token Prediction (MTP) layer

`num_nextn_predict_layers: 1`: `model.layers.{L}` is a depth-1 MTP module in DeepSeek-V3's release layout
(`enorm`, `hnorm`, `eh_proj` [256, 512], a full MoE decoder block, `shared_head.norm`; {n_tensors} tensors,
{n_mtp:,} parameters). Its embedding and output head are the main model's (the release's `embed_tokens` /
`shared_head.head` copies are left out to stay within the 20 MB limit). The runtime uses it as a built-in
draft for self-speculative decoding (docs/mtp.md): `x = eh_proj · [enorm(emb(t+1)); hnorm(h_t)]`, the block,
`lm_head(shared_head.norm(x))` → token t+2.

- Trained with the main model **frozen** (`tools/train/train_mtp.py`): the main weights, this card's
  evaluation and the runtime fixtures stay exactly as they were, and the module learns from the hidden
  states of the exported F16 weights the runtime computes. Same corpus and split; warm-started from
  layer {L - 1}; {st['step']} steps of {args['batch']}×{args['seq']} positions, AdamW, peak LR {args['lr']},
  cosine over a {args['time_budget']:g}-minute training-compute budget ({st['train_seconds'] / 60:.0f} min on one
  shared CPU core), dropout {args['dropout']}, bias balancing γ={args['gamma']} on its router.
- Held-out split, all {acc['windows']} windows of 256 positions ({acc['positions']:,} drafts), exported
  weights, teacher-forced (`/usr/bin/python3 tools/train/mtp_acceptance.py --model public/models/webmoe-tiny --data /work/train-data`):

| metric | value |
|---|---|
| greedy acceptance (MTP argmax = main model's argmax at the next position) | **{acc['greedy_accept'] * 100:.1f}%** |
| acceptance when sampling at temperature 1 (main model samples the draft) | {acc['sample_accept'] * 100:.1f}% |
| distribution overlap Σ min(p, q) | {acc['overlap'] * 100:.1f}% |
| MTP top-1 accuracy on the true token t+2 | {acc['top1'] * 100:.1f}% |
| MTP cross-entropy on t+2 | {acc['loss']:.3f} |

Training evaluations (32 held-out windows): step, MTP loss, top-1, greedy acceptance:

| step | loss | top-1 | greedy acceptance |
|---|---|---|---|
{rows}
{END}
"""
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + sec + text[text.index(END) + len(END) + 1:]
    else:
        anchor = "## Data and licence"
        text = text.replace(anchor, sec + "\n" + anchor, 1)
    open(p, "w").write(text)
    print(f"card: {p}")


if __name__ == "__main__":
    main()
