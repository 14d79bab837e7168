#!/usr/bin/env python3
"""Train a depth-1 Multi-Token Prediction module (DeepSeek-V3 §2.2) for the bundled webmoe-tiny model,
with the main model frozen, on CPU. Issue #18.

Why frozen: the main model's weights (and with them its model card, the reference fixture
test/fixtures/webmoe-tiny-ref and every test of the bundled model) stay exactly as they are, and the
MTP module is a pure add-on that only drafts; retraining jointly as DeepSeek-V3 did would cost the
whole ~100-minute main run again and change every output of the bundled model. The main model is
loaded from the *exported* F16 files, so the MTP module learns from exactly the hidden states the
runtime computes.

* The MTP layer (model.py MTPLayer, checkpoint layer index num_hidden_layers) is warm-started from the
  main model's last layer (same shapes: an MoE block), shared_head.norm from the final norm, enorm and
  hnorm at 1, eh_proj random. The embedding and the output head are the main model's (shared, frozen).
* Loss: cross-entropy of the MTP logits at position i (hidden of token i, embedding of token i+1)
  against token i+2, on random 258-token windows of the training split (256 MTP positions).
* Auxiliary-loss-free bias balancing on the MTP block's router, as train.py does for the main model.
* AdamW, warm-up then cosine over a training-compute budget; <ckpt>/last.pt every --ckpt-minutes and at
  the end (atomic), best held-out checkpoint in <ckpt>/best.pt. Re-running the same command resumes.

  nohup /usr/bin/python3 tools/train/train_mtp.py --model public/models/webmoe-tiny --data /work/train-data \
      --ckpt /work/train-ckpt/mtp --time-budget 30 >> /work/train-ckpt/mtp.log 2>&1 &
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
from model import Config, Transformer, load_hf_model  # noqa: E402


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="public/models/webmoe-tiny", help="the exported main model (frozen)")
    ap.add_argument("--data", default="/work/train-data")
    ap.add_argument("--ckpt", default="/work/train-ckpt/mtp")
    ap.add_argument("--time-budget", type=float, default=30.0, help="minutes of training compute")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--gamma", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-seqs", type=int, default=32)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args()


def build(model_dir):
    """The frozen main model with one fresh MTP layer, warm-started from the last main layer."""
    main = load_hf_model(model_dir)
    c = Config(**{**main.c.to_dict(), "num_nextn_predict_layers": 1})
    model = Transformer(c)
    missing = model.load_state_dict(main.state_dict(), strict=False)
    assert all(k.startswith("mtp_layers.") for k in missing.missing_keys), missing
    m = model.mtp_layers[0]
    last = model.layers[c.num_hidden_layers - 1]
    for name, p in last.state_dict().items():
        m.state_dict()[name].copy_(p)
    m.shared_head.norm.weight.data.copy_(model.norm.weight.data)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("mtp_layers."))
    return model


@torch.no_grad()
def mtp_metrics(model, held, seq, nseq, depth=0):
    """Held-out, teacher-forced: MTP loss/accuracy against token i+2, the greedy acceptance a
    self-speculative decoder would see (argmax MTP(i) == argmax main(i+1)) and the overlap
    E[sum_v min(p_main(i+1), q_mtp(i))] (the acceptance of a draft sampled from q; logged as
    'sample_accept' by the run that trained the bundled module). See mtp_acceptance.py."""
    model.eval()
    n = min(nseq, (len(held) - 2) // seq)
    loss, acc, greedy, soft, cnt, cnt_acc = 0.0, 0, 0, 0.0, 0, 0
    for i in range(0, n, 8):
        xs = [held[j * seq:j * seq + seq + 2] for j in range(i, min(n, i + 8))]
        b = torch.from_numpy(np.stack(xs).astype(np.int64))
        logits, hidden = model(b[:, :seq], return_hidden=True)
        ml = model.mtp_logits(b[:, 1:seq + 1], hidden, depth)
        tgt = b[:, 2:seq + 2]
        loss += F.cross_entropy(ml.reshape(-1, ml.size(-1)), tgt.reshape(-1), reduction="sum").item()
        acc += (ml.argmax(-1) == tgt).sum().item()
        cnt += tgt.numel()
        # main's prediction at position i+1 exists for i in 0..seq-2
        draft = ml[:, :-1].argmax(-1)
        target = logits[:, 1:].argmax(-1)
        greedy += (draft == target).sum().item()
        soft += torch.minimum(torch.softmax(ml[:, :-1], -1), torch.softmax(logits[:, 1:], -1)).sum(-1).sum().item()
        cnt_acc += draft.numel()
    model.train()
    return {"loss": loss / cnt, "top1": acc / cnt, "greedy_accept": greedy / cnt_acc, "overlap": soft / cnt_acc,
            "positions": cnt_acc}


def lr_at(step, a, secs):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    p = min(1.0, secs / (a.time_budget * 60))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    os.makedirs(a.ckpt, exist_ok=True)
    train = np.fromfile(os.path.join(a.data, "train.bin"), dtype=np.uint16)
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16)
    torch.manual_seed(a.seed)
    model = build(a.model)
    m = model.mtp_layers[0]
    if a.dropout > 0:
        for mod in (m.self_attn, m.mlp):
            fwd = mod.forward

            def make(fwd):
                return lambda *args, **kw: F.dropout(fwd(*args, **kw), a.dropout, m.training)
            mod.forward = make(fwd)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for n, p in params if p.dim() >= 2], "weight_decay": a.wd},
                             {"params": [p for n, p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed + 1)
    state = {"step": 0, "loss": [], "maxvio": [], "lr": [], "eval": [], "train_seconds": 0.0, "best_eval": float("inf")}
    last = os.path.join(a.ckpt, "last.pt")
    if os.path.exists(last):
        ck = torch.load(last)
        m.load_state_dict(ck["mtp"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["data_rng"])
        torch.set_rng_state(ck["torch_rng"])
        state = ck["state"]
        print(f"resumed from {last} at step {state['step']}", flush=True)
    else:
        ev = mtp_metrics(model, held, a.seq, a.eval_seqs)
        state["eval"].append([0, ev])
        print(f"eval step 0 (warm start) {json.dumps(ev)}", flush=True)
    print(f"trainable {sum(p.numel() for _, p in params)} params; args {vars(a)}", flush=True)

    def save(path):
        ck = {"mtp": m.state_dict(), "optimizer": opt.state_dict(), "data_rng": gen.get_state(),
              "torch_rng": torch.get_rng_state(), "state": state, "config": model.c.to_dict(), "args": vars(a)}
        torch.save(ck, path + ".tmp")
        os.replace(path + ".tmp", path)

    model.eval()          # main model: no dropout, exactly the runtime's hidden states
    m.train()
    E = model.c.n_routed_experts
    last_save = time.time()
    t_log = time.time()
    done = lambda: state["train_seconds"] >= a.time_budget * 60
    while not done():
        t0 = time.time()
        step = state["step"]
        lr = lr_at(step, a, state["train_seconds"])
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - a.seq - 2, (a.batch,), generator=gen).tolist()
        b = torch.from_numpy(np.stack([train[s:s + a.seq + 2] for s in starts]).astype(np.int64))
        with torch.no_grad():
            _, hidden = model(b[:, :a.seq], return_hidden=True)
        ml = model.mtp_logits(b[:, 1:a.seq + 1], hidden)
        loss = F.cross_entropy(ml.reshape(-1, ml.size(-1)), b[:, 2:a.seq + 2].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        with torch.no_grad():
            load = torch.bincount(m.mlp.last_indices.reshape(-1), minlength=E).float()
            mean = load.mean()
            vio = ((load.max() - mean) / mean).item()
            m.mlp.gate.e_score_correction_bias.add_(a.gamma * torch.sign(mean - load))
        state["step"] = step + 1
        state["loss"].append(loss.item())
        state["maxvio"].append([vio])
        state["lr"].append(lr)
        state["train_seconds"] += time.time() - t0
        if state["step"] % 10 == 0 or state["step"] == 1:
            sps = 10 / (time.time() - t_log) if state["step"] > 1 else 0.0
            t_log = time.time()
            print(f"step {state['step']} loss {loss.item():.4f} lr {lr:.2e} gnorm {gn:.2f} maxvio {vio:.2f} "
                  f"steps/s {sps:.3f} elapsed {state['train_seconds']/60:.1f}m", flush=True)
        if state["step"] % a.eval_every == 0 or done():
            ev = mtp_metrics(model, held, a.seq, a.eval_seqs)
            state["eval"].append([state["step"], ev])
            print(f"eval step {state['step']} {json.dumps(ev)}", flush=True)
            if ev["loss"] < state["best_eval"]:
                state["best_eval"] = ev["loss"]
                save(os.path.join(a.ckpt, "best.pt"))
        if time.time() - last_save > a.ckpt_minutes * 60 or done():
            save(last)
            last_save = time.time()
            print(f"checkpoint step {state['step']}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
