#!/usr/bin/env python3
"""Recovery training of a pre-pruned checkpoint: a short fine-tune with the sparsity mask fixed.

Reads a pre-pruned model folder written by `webmoe prune` (compressed `<name>.sparse_*` tensors,
src/sparse/tensors.ts), unpacks every sparse weight to its dense matrix and its mask (the positions the
pattern keeps), and fine-tunes the whole model (masked full fine-tune): after every optimizer step the
pruned weights are multiplied by their masks, so they keep the exact 2:4 / V:2:M pattern (the gradient of
a pruned weight is masked too, so AdamW's moments never move it). This is the third, longest stage of the
V:N:M paper's schedule (2410.16135: sparse training with fixed masks); its first two stages (dense LoRA
warm-up, dynamic masks) are left out: they would change the mask the pruner chose.

  /usr/bin/python3 tools/train/recover.py --pruned /tmp/pruned-2-4 --data /work/train-data \
      --ckpt /work/train-ckpt/recover-2-4 --time-budget 10 > /work/train-ckpt/recover-2-4.log 2>&1 &
  /usr/bin/python3 tools/train/recover.py --pruned /tmp/pruned-2-4 --ckpt /work/train-ckpt/recover-2-4 \
      --export /tmp/recovered-2-4-dense --dtype f16   # best checkpoint -> dense HF folder
  node bin/webmoe.js prune --model /tmp/recovered-2-4-dense --out public/models/... --sparsity 2:4 --values f16

Re-pruning the export with the same pattern keeps exactly the fine-tuned values (every kept position of
a block is in the pattern the pruner finds), so the result runs on the sparse kernels.
Checkpoints: <ckpt>/last.pt every --ckpt-minutes (re-running the same command resumes), <ckpt>/best.pt
at the lowest held-out loss (evaluated every --eval-every steps, and before the first step).
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Transformer, config_from_hf, hf_config, hf_state_dict  # noqa: E402
from st_io import load_safetensors, save_safetensors  # noqa: E402
from train import add_dropout, evaluate  # noqa: E402

SUFFIX = ".sparse_config"


def unpack_sparse(tensors, name):
    """Dense [N, K] matrix and boolean mask of compressed weight `name` (layout of src/sparse/formats.ts)."""
    fmt, N, K, V, M = (int(x) for x in tensors[name + ".sparse_config"])
    GW = 4 if fmt == 0 else M
    G = -(-K // GW)
    values = tensors[name + ".sparse_values"].astype(np.float32).reshape(N, 2 * G)
    meta = tensors[name + ".sparse_meta"].astype(np.uint32).reshape(N, -1)
    g = np.arange(G)
    code = (meta[:, g // 8] >> (4 * (g % 8)).astype(np.uint32)) & 15  # [N, G]
    if fmt == 0:
        cand = np.broadcast_to(np.arange(4, dtype=np.int64), (N, G, 4))
    else:
        cols = tensors[name + ".sparse_columns"].astype(np.uint32).reshape(-1, G)  # [ceil(N/V), G]
        words = cols[np.arange(N) // V]  # [N, G]
        cand = np.stack([(words >> (8 * i)) & 255 for i in range(4)], axis=-1).astype(np.int64)
    dense = np.zeros((N, G * GW), np.float32)
    mask = np.zeros((N, G * GW), bool)
    rows = np.arange(N)[:, None]
    for j in range(2):
        c = np.take_along_axis(cand, ((code >> (2 * j)) & 3).astype(np.int64)[..., None], axis=-1)[..., 0]
        k = g[None, :] * GW + c
        dense[rows, k] = values[:, 2 * g + j]
        mask[rows, k] = True
    return dense[:, :K], mask[:, :K]


def load_pruned(model_dir):
    """(model, {param name: mask}, config dict) from a pre-pruned folder (dense folders give no masks)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        hf = json.load(f)
    tensors, _ = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    sd, masks = {}, {}
    for k, v in tensors.items():
        if any(k.endswith(s) for s in (".sparse_values", ".sparse_meta", ".sparse_columns")):
            continue
        if k.endswith(SUFFIX):
            name = k[: -len(SUFFIX)]
            dense, mask = unpack_sparse(tensors, name)
            key = name[len("model."):] if name.startswith("model.") else name
            sd[key] = torch.from_numpy(dense)
            masks[key] = torch.from_numpy(mask)
            continue
        sd[k[len("model."):] if k.startswith("model.") else k] = torch.from_numpy(v.astype(np.float32))
    cfg = config_from_hf(hf)
    model = Transformer(cfg)
    model.load_state_dict(sd, strict=True)
    return model, masks, cfg


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pruned", required=True, help="pre-pruned model folder (webmoe prune --out)")
    ap.add_argument("--data", default="/work/train-data")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--time-budget", type=float, default=10.0, help="minutes of training compute (cosine over it)")
    ap.add_argument("--steps", type=int, default=100000, help="step bound (the time budget normally ends first)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4, help="peak LR (training used 2e-3; recovery starts from a trained model)")
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--gamma", type=float, default=1e-3, help="bias balancing speed (0: router biases fixed)")
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-seqs", type=int, default=32)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--export", default=None, help="write <ckpt>/best.pt as a dense HF folder here and exit")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f32",
                    help="export dtype (f16 as the bundled model; the router bias stays F32)")
    return ap.parse_args()


def export_dense(a):
    ck = torch.load(os.path.join(a.ckpt, "best.pt"), map_location="cpu")
    model, masks, cfg = load_pruned(a.pruned)
    model.load_state_dict(ck["model"])
    sd = hf_state_dict(model)
    for k, m in masks.items():  # the pattern holds by construction; check it rather than trust it
        w = sd["model." + k if not k.startswith("lm_head") else k]
        assert not torch.any(w[~m] != 0), f"{k}: weights outside the mask"
    os.makedirs(a.export, exist_ok=True)
    dt = np.float16 if a.dtype == "f16" else np.float32
    save_safetensors(os.path.join(a.export, "model.safetensors"),
                     {k: v.numpy().astype(np.float32 if k.endswith("e_score_correction_bias") else dt) for k, v in sd.items()}, {"format": "pt"})
    with open(os.path.join(a.export, "config.json"), "w") as f:
        json.dump(hf_config(cfg, "float16" if a.dtype == "f16" else "float32"), f, indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(a.pruned, f)):
            shutil.copy(os.path.join(a.pruned, f), os.path.join(a.export, f))
    st = ck["state"]
    print(json.dumps({"exported": a.export, "step": st["step"], "heldout_loss_start": st["eval"][0][1],
                      "heldout_loss_best": st["best_eval"], "train_minutes": round(st["train_seconds"] / 60, 2)}))


def main():
    a = parse()
    torch.set_num_threads(1)
    if a.export:
        export_dense(a)
        return
    os.makedirs(a.ckpt, exist_ok=True)
    train = np.fromfile(os.path.join(a.data, "train.bin"), dtype=np.uint16)
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16)
    model, masks, cfg = load_pruned(a.pruned)
    if not masks:
        sys.exit(f"{a.pruned} holds no compressed (pre-pruned) weights")
    add_dropout(model, a.dropout)
    params = dict(model.named_parameters())
    mask_of = {params[k]: m.float() for k, m in masks.items()}
    decay = [p for n, p in params.items() if p.dim() >= 2]
    no_decay = [p for n, p in params.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    state = {"step": 0, "loss": [], "eval": [], "train_seconds": 0.0, "best_eval": float("inf")}
    last = os.path.join(a.ckpt, "last.pt")
    if os.path.exists(last):
        ck = torch.load(last)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["data_rng"])
        torch.set_rng_state(ck["torch_rng"])
        state = ck["state"]
        print(f"resumed from {last} at step {state['step']}", flush=True)
    print(f"pruned {a.pruned}: {len(masks)} masked matrices, density "
          f"{sum(m.sum().item() for m in masks.values()) / sum(m.numel() for m in masks.values()):.4f}; args {vars(a)}", flush=True)

    def save(path):
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "data_rng": gen.get_state(),
              "torch_rng": torch.get_rng_state(), "state": state, "config": cfg.to_dict(), "args": vars(a)}
        torch.save(ck, path + ".tmp")
        os.replace(path + ".tmp", path)

    def do_eval():
        ev = evaluate(model, held, a.seq, a.eval_seqs)
        state["eval"].append([state["step"], ev])
        print(f"eval step {state['step']} heldout_loss {ev:.4f} ppl {math.exp(ev):.2f}", flush=True)
        if ev < state["best_eval"]:
            state["best_eval"] = ev
            save(os.path.join(a.ckpt, "best.pt"))

    if not state["eval"]:
        do_eval()
    moe = model.moe_layers()
    E = cfg.n_routed_experts
    budget = a.time_budget * 60
    last_save = time.time()
    model.train()
    while state["train_seconds"] < budget and state["step"] < a.steps:
        t0 = time.time()
        step = state["step"]
        p = min(1.0, state["train_seconds"] / budget)
        lr = a.lr * (step + 1) / a.warmup if step < a.warmup else a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - a.seq - 1, (a.batch,), generator=gen).tolist()
        b = torch.from_numpy(np.stack([train[s:s + a.seq + 1] for s in starts]).astype(np.int64))
        logits = model(b[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for prm, m in mask_of.items():
            prm.grad.mul_(m)
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for prm, m in mask_of.items():
                prm.mul_(m)
            if a.gamma > 0:
                for li, mo in moe:
                    load = torch.bincount(mo.last_indices.reshape(-1), minlength=E).float()
                    mo.gate.e_score_correction_bias.add_(a.gamma * torch.sign(load.mean() - load))
        state["step"] = step + 1
        state["loss"].append(loss.item())
        state["train_seconds"] += time.time() - t0
        if state["step"] % 10 == 0:
            print(f"step {state['step']} loss {loss.item():.4f} lr {lr:.2e} gnorm {gn:.2f} "
                  f"elapsed {state['train_seconds'] / 60:.1f}m", flush=True)
        done = state["train_seconds"] >= budget or state["step"] >= a.steps
        if state["step"] % a.eval_every == 0 or done:
            do_eval()
        if time.time() - last_save > a.ckpt_minutes * 60 or done:
            save(last)
            last_save = time.time()
    print("done", flush=True)


if __name__ == "__main__":
    main()
