#!/usr/bin/env python3
"""A random-weight DeepSeek-V3 with one Multi-Token Prediction layer, and its reference MTP logits
from model.py (MTPLayer follows vLLM's DeepSeekMultiTokenPredictorLayer line by line), for the runtime's
MTP test (test/gpu/mtp.test.ts). Issue #18.

  /usr/bin/python3 tools/train/make_mtp_fixture.py --out test/fixtures/deepseek-v3-mtp-tiny

The config is the official fixture's (deepseek-v3-tiny: dim 64, 3 layers, 8 experts, top-2) with
num_nextn_predict_layers 1, so the MTP layer is model.layers.3 (an MoE block). All tensors F32, in the
DeepSeek-V3 release layout, including the MTP layer's own copies of embed_tokens and shared_head.head
(given values different from the main model's, so a runtime that used the main model's would fail).
Weights are drawn with std 0.15 (norm weights 1 + 0.1·N(0,1)) so the logits are far from flat.

Writes config.json, model.safetensors, tokens.json {"tokens"} (S+1 ids), logits.f32.bin (main model
[S+1, V], row j after token j), mtp_logits.f32.bin ([S, V]: row i = the MTP module at position i, from
the main model's final-norm hidden state at i and the embedding of token i+1; it predicts token i+2),
and README.md. Routing margins (smallest gap between a chosen and an unchosen expert) are recorded in
reference.json: a float32 runtime agrees on routing when they are >> 1e-5.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Transformer, hf_config, hf_state_dict  # noqa: E402
from st_io import save_safetensors  # noqa: E402
from make_ref import routing_margins  # noqa: E402

CFG = dict(vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
           first_k_dense_replace=1, num_attention_heads=4, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16,
           qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
           n_group=4, topk_group=2, routed_scaling_factor=2.5, max_position_embeddings=256, num_nextn_predict_layers=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="test/fixtures/deepseek-v3-mtp-tiny")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--seq", type=int, default=12)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    c = Config(**CFG)
    model = Transformer(c)
    m = model.mtp_layers[0]
    m.embed_tokens = torch.nn.Embedding(c.vocab_size, c.hidden_size)
    m.shared_head.head = torch.nn.Linear(c.hidden_size, c.vocab_size, bias=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
        for _, moe in model.moe_layers():
            moe.gate.e_score_correction_bias.copy_(0.05 * torch.randn(c.n_routed_experts))
        m.mlp.gate.e_score_correction_bias.copy_(0.05 * torch.randn(c.n_routed_experts))
    model.eval()
    tokens = torch.randint(0, c.vocab_size, (1, a.seq + 1))
    margins = {}
    hooks = []
    for name, moe in [(str(i), l.mlp) for i, l in enumerate(model.layers) if l.is_moe] + [(str(c.num_hidden_layers), m.mlp)]:
        def pre(mod, inp, name=name):
            x = inp[0].reshape(-1, inp[0].shape[-1])
            margins[name] = min(margins.get(name, 1e9), float(routing_margins(mod.gate, x).min()))
        hooks.append(moe.register_forward_pre_hook(pre))
    with torch.no_grad():
        logits, hidden = model(tokens, return_hidden=True)
        # MTP positions 0..S-1: hidden at i (tokens[0..S-1]), embedding of token i+1
        _, hidden_s = model(tokens[:, :a.seq], return_hidden=True)
        mtp = model.mtp_logits(tokens[:, 1:a.seq + 1], hidden_s)
    for h in hooks:
        h.remove()
    os.makedirs(a.out, exist_ok=True)
    sd = hf_state_dict(model)
    save_safetensors(os.path.join(a.out, "model.safetensors"), {k: v.numpy().astype(np.float32) for k, v in sd.items()}, {"format": "pt"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(hf_config(c, "float32"), f, indent=2)
    with open(os.path.join(a.out, "tokens.json"), "w") as f:
        json.dump({"tokens": tokens[0].tolist()}, f)
    logits[0].numpy().astype("<f4").tofile(os.path.join(a.out, "logits.f32.bin"))
    mtp[0].numpy().astype("<f4").tofile(os.path.join(a.out, "mtp_logits.f32.bin"))
    ref = {"seed": a.seed, "seq": a.seq, "routing_margin_min": margins, "mtp_argmax": mtp[0].argmax(-1).tolist(),
           "tensors": sorted(k for k in sd if k.startswith(f"model.layers.{c.num_hidden_layers}.") and ".experts." not in k)}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write(__doc__.split("\n\n", 1)[1].split("Writes")[0].strip() + "\n\nGenerated by `/usr/bin/python3 tools/train/make_mtp_fixture.py --out "
                + a.out + "` (seed " + str(a.seed) + "). Files:\n\n" + "Writes" + __doc__.split("Writes", 1)[1])
    print(json.dumps({"margins": margins, "size": os.path.getsize(os.path.join(a.out, "model.safetensors"))}))


if __name__ == "__main__":
    main()
