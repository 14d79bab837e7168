#!/usr/bin/env python3
"""Reference outputs of the bundled webmoe-tiny model, for the runtime's end-to-end test.

Loads the *bundled* files (public/models/webmoe-tiny/{config.json, model.safetensors}); the stored
F16 values are widened to float32 exactly, so the reference is computed with exactly the weights the
runtime loads. Everything is computed in float32 by model.py (which matches the official DeepSeek-V3
reference code to ~4e-6, see check_reference.py).

  /usr/bin/python3 tools/train/make_ref.py --model public/models/webmoe-tiny \
      --data /work/train-data --out test/fixtures/webmoe-tiny-ref

Writes <out>/tokens.json {"tokens", "seq_len", "prefill_split", "text"}, <out>/logits_prefill.f32.bin
(raw little-endian float32 [S, V]; row j = logits after token j), <out>/routing.json
{"<layer>": {"indices": [S][k], "weights": [S][k]}} (indices in descending biased-score order,
weights = final multipliers of the routed experts' outputs), <out>/reference.json (provenance:
sha256 of the model file, routing margins, greedy continuation) and <out>/README.md.
The window is chosen among held-out document openings to maximise the smallest routing margin.
"""
import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_hf_model  # noqa: E402
from train_tokenizer import BPETokenizer  # noqa: E402


def routing_margins(gate, x):
    """Smallest gap, per token, between a selected and a non-selected candidate, at both the group and
    the expert stage (in biased-score units). A float32 runtime agrees on routing if margins >> 1e-6."""
    c = gate.c
    s = torch.sigmoid(torch.nn.functional.linear(x.float(), gate.weight.float())) + gate.e_score_correction_bias
    g = s.view(x.size(0), c.n_group, -1)
    gs = g.topk(2, dim=-1)[0].sum(-1).sort(dim=-1, descending=True)[0]
    group_margin = gs[:, c.topk_group - 1] - gs[:, c.topk_group]
    keep = g.topk(2, dim=-1)[0].sum(-1).topk(c.topk_group, dim=-1)[1]
    mask = torch.ones(x.size(0), c.n_group, dtype=torch.bool).scatter_(1, keep, False)
    sel = g.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1).sort(dim=-1, descending=True)[0]
    k = c.num_experts_per_tok
    expert_margin = sel[:, k - 1] - sel[:, k]
    return torch.minimum(group_margin, expert_margin)


@torch.no_grad()
def run(model, tokens):
    """Prefill forward; returns logits [S,V], routing {layer: (indices, weights)}, min margin per layer."""
    margins = {}
    hooks = []
    for li, moe in model.moe_layers():
        def pre(mod, inp, li=li):
            x = inp[0].reshape(-1, inp[0].shape[-1])
            margins[li] = float(routing_margins(mod.gate, x).min())
        hooks.append(moe.register_forward_pre_hook(pre))
    logits = model(torch.tensor([tokens]))[0]
    for h in hooks:
        h.remove()
    routing = {li: (m.last_indices.clone(), m.last_weights.clone()) for li, m in model.moe_layers()}
    return logits, routing, margins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="public/models/webmoe-tiny")
    ap.add_argument("--data", default="/work/train-data")
    ap.add_argument("--out", default="test/fixtures/webmoe-tiny-ref")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--prefill-split", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_hf_model(a.model)
    c = model.c
    tok = BPETokenizer.load(os.path.join(a.model, "tokenizer.json"))
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16).astype(np.int64)
    starts = [int(i) for i in np.nonzero(held == c.bos_token_id)[0] if i + a.seq <= len(held)]
    best = None
    for s in starts:
        toks = held[s:s + a.seq].tolist()
        if c.eos_token_id in toks:
            continue
        _, _, margins = run(model, toks)
        m = min(margins.values())
        if best is None or m > best[0]:
            best = (m, s, toks)
    margin, start, tokens = best
    logits, routing, margins = run(model, tokens)
    os.makedirs(a.out, exist_ok=True)
    text = tok.decode(tokens)
    with open(os.path.join(a.out, "tokens.json"), "w") as f:
        json.dump({"tokens": tokens, "seq_len": len(tokens), "prefill_split": a.prefill_split, "text": text}, f)
    logits.numpy().astype("<f4").tofile(os.path.join(a.out, "logits_prefill.f32.bin"))
    rj = {str(li): {"indices": idx.tolist(), "weights": [[round(float(v), 8) for v in row] for row in w.tolist()]}
          for li, (idx, w) in routing.items()}
    with open(os.path.join(a.out, "routing.json"), "w") as f:
        json.dump(rj, f)
    # greedy continuation (full recompute each step), handy for an end-to-end generation test
    ids = list(tokens[:a.prefill_split])
    with torch.no_grad():
        for _ in range(16):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    greedy = ids[a.prefill_split:]
    mpath = os.path.join(a.model, "model.safetensors")
    sha = hashlib.sha256(open(mpath, "rb").read()).hexdigest()
    ref = {
        "model": "public/models/webmoe-tiny/model.safetensors",
        "model_sha256": sha,
        "model_config": "public/models/webmoe-tiny/config.json",
        "computed_with": "tools/train/make_ref.py (PyTorch float32; stored F16 weights widened exactly to F32)",
        "heldout_offset": start,
        "logits_shape": list(logits.shape),
        "logits_std": float(logits.std()),
        "argmax": logits.argmax(-1).tolist(),
        "min_routing_margin_per_layer": {str(k): v for k, v in margins.items()},
        "greedy_after_prefill_split": {"prompt_len": a.prefill_split, "tokens": greedy, "text": tok.decode(greedy)},
    }
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    readme = f"""# webmoe-tiny-ref: reference outputs of the bundled webmoe-tiny model

Computed by `tools/train/make_ref.py` with the PyTorch model in `tools/train/model.py` (float32, CPU),
which matches the official DeepSeek-V3 reference fixture to ~4e-6 (`tools/train/check_reference.py`).

**Weights:** the model is *not* copied here (the F32 version would be {sum(p.numel() for p in model.parameters())*4/1e6:.0f} MB).
Load the bundled `public/models/webmoe-tiny/{{config.json, model.safetensors}}` (F16 matrices, F32
`e_score_correction_bias`); these numbers were computed from exactly those values widened to float32.
`reference.json.model_sha256` is the SHA-256 of the model file they belong to: if the bundled model is
re-exported, re-run make_ref.py.

Files (little-endian):
- `tokens.json`: `{{"tokens": [...], "seq_len": {len(tokens)}, "prefill_split": {a.prefill_split}, "text": ...}}`: the
  opening of a held-out Brown document (starts with `<|bos|>` = 0).
- `logits_prefill.f32.bin`: raw float32 `[{len(tokens)}, {c.vocab_size}]`, row j = logits after token j (one prefill forward).
  Decode / hybrid runs (prefill `[0, P)` then one token at a time) must give the same rows.
- `routing.json`: `{{"<layer>": {{"indices": [S][{c.num_experts_per_tok}], "weights": [S][{c.num_experts_per_tok}]}}}}` for MoE layers
  {', '.join(str(k) for k in routing)}; indices in descending biased-score order (compare as sets); weights are the final
  multipliers of the routed experts (renormalised unbiased sigmoid scores × {c.routed_scaling_factor}).
- `reference.json`: provenance, per-layer minimum routing margin (smallest biased-score gap between a chosen and a
  rejected group/expert, here ≥ {margin:.1e}: a float32 runtime must pick the same experts; an F16-accumulating
  one might not if the margin is small), argmax per row, and the greedy continuation of the first P tokens.

Suggested tolerances: max |Δlogit| ≤ 1e-3 for a float32 runtime (logit std ≈ {float(logits.std()):.1f}), identical expert sets.
"""
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write(readme)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print(f"wrote {a.out} ({total/1e6:.2f} MB): S={len(tokens)} from held-out offset {start}, "
          f"min routing margin {margin:.2e}; text: {text[:80]!r}")


if __name__ == "__main__":
    main()
