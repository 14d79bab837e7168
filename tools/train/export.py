#!/usr/bin/env python3
"""Export a training checkpoint to a Hugging Face DeepSeek-V3 folder and write its model card.

Works on any checkpoint written by train.py (last.pt or best.pt), also while training continues.

  /usr/bin/python3 tools/train/export.py --ckpt /work/train-ckpt/main/best.pt \
      --train-state /work/train-ckpt/main/last.pt \
      --data /work/train-data --out public/models/webmoe-tiny --dtype f16

Writes <out>/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json, README.md, loss.svg}. Matrices are stored [out_features, in_features] under
the HF tensor names; with --dtype f16 every tensor is F16 except mlp.gate.e_score_correction_bias,
which stays F32 (as in the official DeepSeek-V3 checkpoints). --no-card skips the model card.
The MaxVio comparison uses, by default, /work/train-ckpt/nobias/last.pt (γ=0) and
/work/train-ckpt/gamma1e-3/last.pt (γ=1e-3); override with --compare LABEL=CKPT (repeatable).
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Transformer, hf_config, hf_state_dict  # noqa: E402
from st_io import save_safetensors  # noqa: E402

DEFAULT_COMPARE = ["γ=0 (no balancing)=/work/train-ckpt/nobias/last.pt", "γ=0.001=/work/train-ckpt/gamma1e-3/last.pt"]

GENERATION_CONFIG = {"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 0.8,
                     "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.1, "max_new_tokens": 128}


def export(ckpt_path, data_dir, out, dtype="f16"):
    ck = torch.load(ckpt_path, map_location="cpu")
    cfg = Config(**ck["config"])
    model = Transformer(cfg)
    model.load_state_dict(ck["model"])
    sd = hf_state_dict(model)
    np_dtype = np.float16 if dtype == "f16" else np.float32
    tensors = {}
    for k, v in sd.items():
        a = v.numpy()
        tensors[k] = a.astype(np.float32) if k.endswith("e_score_correction_bias") else a.astype(np_dtype)
    os.makedirs(out, exist_ok=True)
    save_safetensors(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(cfg, "float16" if dtype == "f16" else "float32"), f, indent=2)
    tdir = os.path.join(data_dir, "tokenizer")
    shutil.copy(os.path.join(tdir, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    with open(os.path.join(tdir, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["model_max_length"] = cfg.max_position_embeddings
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    gc = dict(GENERATION_CONFIG, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(gc, f, indent=2)
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"exported step {ck['state']['step']} of {ckpt_path} -> {out} ({size/1e6:.2f} MB, {dtype})")
    return ck


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="/work/train-ckpt/main/best.pt")
    ap.add_argument("--train-state", default=None,
                    help="checkpoint whose loss/MaxVio history goes into the card (default: --ckpt)")
    ap.add_argument("--compare", action="append", default=None, metavar="LABEL=CKPT",
                    help="short comparison run(s) for the MaxVio table, e.g. 'γ=0 (no balancing)=/work/train-ckpt/nobias/last.pt'; "
                         "missing files are skipped")
    ap.add_argument("--data", default="/work/train-data")
    ap.add_argument("--out", default="public/models/webmoe-tiny")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    ap.add_argument("--no-card", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ck = export(a.ckpt, a.data, a.out, a.dtype)
    if a.no_card:
        return
    from model_card import write_card
    state_ck = torch.load(a.train_state, map_location="cpu") if a.train_state else ck
    comps = []
    for spec in (a.compare if a.compare is not None else DEFAULT_COMPARE):
        label, path = spec.rsplit("=", 1)
        if os.path.exists(path):
            comps.append((label, torch.load(path, map_location="cpu")))
        else:
            print(f"comparison {path} not found, skipped")
    label = "best held-out checkpoint" if os.path.basename(a.ckpt).startswith("best") else f"checkpoint {os.path.basename(a.ckpt)}"
    write_card(a.out, a.data, ck, state_ck, comps, label)


if __name__ == "__main__":
    main()
