#!/usr/bin/env python3
"""Train the tiny DeepSeek-V3 MoE (model.py) on the tokenised Brown corpus, on CPU.

* AdamW + linear warm-up + cosine decay, random 256-token windows of the training stream.
* Auxiliary-loss-free load balancing (DeepSeek-V3 §2.1.2): after every optimizer step, for each MoE
  layer, b_i <- b_i + gamma * sign(mean_load - load_i), loads counted over that step's tokens.
  The bias (mlp.gate.e_score_correction_bias) is a buffer, never touched by the gradient.
* Records per-step loss, per-layer MaxVio = (max load - mean load) / mean load, periodic held-out loss.
* Checkpoints (model, optimizer, biases, step, RNG states, histories) to <ckpt>/last.pt every
  --ckpt-minutes, atomically; the best held-out checkpoint is also kept as <ckpt>/best.pt.
  Re-running the same command resumes from <ckpt>/last.pt.

Usage (background, one thread):
  nohup /usr/bin/python3 tools/train/train.py --data /work/train-data --ckpt /work/train-ckpt/main \
      --steps 3200 > /work/train-ckpt/main.log 2>&1 &
With a CPU shared with other jobs, use a compute-time budget instead (cosine over training time):
  ... train.py --ckpt /work/train-ckpt/main --steps 3200 --time-budget 100
The budget can be changed while training runs: echo '{"time_budget": 120}' > <ckpt>/control.json
Comparison run without bias balancing (same init/data/schedule, stops early):
  /usr/bin/python3 tools/train/train.py --ckpt /work/train-ckpt/nobias --steps 3200 --stop-at 200 --no-bias-update
"""
import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Transformer, count_params  # noqa: E402


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/train-data")
    ap.add_argument("--ckpt", default="/work/train-ckpt/main")
    ap.add_argument("--steps", type=int, default=2700, help="total steps of the LR schedule")
    ap.add_argument("--stop-at", type=int, default=None, help="stop after this step (schedule unchanged)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="minutes of training compute: the cosine schedule follows elapsed training time "
                         "instead of steps and training stops when the budget is used (robust to a shared CPU)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--gamma", type=float, default=5e-3, help="bias update speed (DeepSeek-V3 used 1e-3 over a far longer run)")
    ap.add_argument("--no-bias-update", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-seqs", type=int, default=32)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args()


def lr_at(step, a, train_seconds=0.0):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    if a.time_budget:
        p = min(1.0, train_seconds / (a.time_budget * 60))
    else:
        p = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def add_dropout(model, p):
    # Wrap forward functions in place so state_dict names stay identical to the HF names.
    if p <= 0:
        return
    for layer in model.layers:
        for mod in (layer.self_attn, layer.mlp):
            fwd = mod.forward

            def make(fwd):
                def f(*args, **kw):
                    return F.dropout(fwd(*args, **kw), p, model.training)
                return f
            mod.forward = make(fwd)


@torch.no_grad()
def evaluate(model, held, seq, nseq):
    model.eval()
    n = min(nseq, (len(held) - 1) // seq)
    tot, cnt = 0.0, 0
    for i in range(0, n, 8):
        xs = [held[j * seq:(j * seq) + seq + 1] for j in range(i, min(n, i + 8))]
        b = torch.from_numpy(np.stack(xs).astype(np.int64))
        logits = model(b[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1), reduction="sum").item()
        cnt += b[:, 1:].numel()
    model.train()
    return tot / cnt


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    os.makedirs(a.ckpt, exist_ok=True)
    train = np.fromfile(os.path.join(a.data, "train.bin"), dtype=np.uint16)
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16)
    with open(os.path.join(a.data, "tokenizer", "tokenizer.json")) as f:
        vocab_size = len(json.load(f)["model"]["vocab"])
    cfg = Config(vocab_size=vocab_size, max_position_embeddings=a.seq)

    torch.manual_seed(a.seed)
    model = Transformer(cfg)
    add_dropout(model, a.dropout)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed + 1)
    state = {"step": 0, "loss": [], "maxvio": [], "lr": [], "eval": [], "train_seconds": 0.0,
             "best_eval": float("inf"), "bias_update": not a.no_bias_update}
    last = os.path.join(a.ckpt, "last.pt")
    if os.path.exists(last):
        ck = torch.load(last)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["data_rng"])
        torch.set_rng_state(ck["torch_rng"])
        state = ck["state"]
        print(f"resumed from {last} at step {state['step']}", flush=True)
    total, active = count_params(cfg)
    print(f"config {json.dumps(cfg.to_dict())}", flush=True)
    print(f"params total {total} active/token {active}; train tokens {len(train)}, held-out {len(held)}; "
          f"args {vars(a)}", flush=True)

    def save(path, extra=None):
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "data_rng": gen.get_state(),
              "torch_rng": torch.get_rng_state(), "state": state, "config": cfg.to_dict(), "args": vars(a)}
        if extra:
            ck.update(extra)
        tmp = path + ".tmp"
        torch.save(ck, tmp)
        os.replace(tmp, path)

    moe = model.moe_layers()
    E = cfg.n_routed_experts
    stop = a.stop_at if a.stop_at is not None else a.steps
    model.train()
    last_save = time.time()
    t_log = time.time()
    def finished():
        if a.time_budget and state["train_seconds"] >= a.time_budget * 60:
            return True
        return state["step"] >= stop

    control = os.path.join(a.ckpt, "control.json")
    while not finished():
        step = state["step"]
        if step % 10 == 0 and os.path.exists(control):
            # live overrides without a restart, e.g. {"time_budget": 120}
            try:
                with open(control) as f:
                    for k, v in json.load(f).items():
                        if getattr(a, k, None) != v:
                            print(f"control.json: {k} {getattr(a, k, None)} -> {v}", flush=True)
                            setattr(a, k, v)
            except (OSError, ValueError) as e:
                print(f"control.json ignored: {e}", flush=True)
        t0 = time.time()
        lr = lr_at(step, a, state["train_seconds"])
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - a.seq - 1, (a.batch,), generator=gen).tolist()
        b = torch.from_numpy(np.stack([train[s:s + a.seq + 1] for s in starts]).astype(np.int64))
        logits = model(b[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        vios = []
        with torch.no_grad():
            for li, m in moe:
                load = torch.bincount(m.last_indices.reshape(-1), minlength=E).float()
                mean = load.mean()
                vios.append(((load.max() - mean) / mean).item())
                if not a.no_bias_update:
                    m.gate.e_score_correction_bias.add_(a.gamma * torch.sign(mean - load))
        state["step"] = step + 1
        state["loss"].append(loss.item())
        state["maxvio"].append(vios)
        state["lr"].append(lr)
        state["train_seconds"] += time.time() - t0
        if state["step"] % 10 == 0 or state["step"] == 1:
            sps = 10 / (time.time() - t_log) if state["step"] > 1 else 0.0
            t_log = time.time()
            print(f"step {state['step']} loss {loss.item():.4f} lr {lr:.2e} gnorm {gn:.2f} "
                  f"maxvio {' '.join(f'{v:.2f}' for v in vios)} steps/s {sps:.3f} "
                  f"elapsed {state['train_seconds']/60:.1f}m", flush=True)
        if state["step"] % a.eval_every == 0 or finished():
            ev = evaluate(model, held, a.seq, a.eval_seqs)
            state["eval"].append([state["step"], ev])
            print(f"eval step {state['step']} heldout_loss {ev:.4f} ppl {math.exp(ev):.1f}", flush=True)
            if ev < state["best_eval"]:
                state["best_eval"] = ev
                save(os.path.join(a.ckpt, "best.pt"))
        if time.time() - last_save > a.ckpt_minutes * 60 or finished():
            save(last)
            last_save = time.time()
            print(f"checkpoint step {state['step']}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
