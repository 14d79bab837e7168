"""A miniature DeepSeek-V3 in PyTorch, following the official reference (deepseek-ai/DeepSeek-V3
inference/model.py) conventions exactly:

* RMSNorm with eps 1e-6 everywhere; h = embed(tok) (no scaling);
  h += MLA(RMSNorm(h)); h += FFN(RMSNorm(h)); logits = lm_head(RMSNorm(h)), lm_head untied.
* MLA with q_lora and kv_lora: q = W_qb · RMSNorm(W_qa x), per head [nope | rope];
  kv_a_proj_with_mqa(x) = [latent (kv_lora) | k_rope (rope)], latent -> RMSNorm -> kv_b_proj,
  kv_b rows per head [k_nope | v]; k_rope is one vector shared by all heads.
* RoPE on *interleaved* pairs (2i, 2i+1), inv_freq[i] = theta^(-2i/rope_dim), 0-based positions.
* softmax scale (qk_nope + qk_rope)^-0.5 (no YaRN here).
* MoE router: s = sigmoid(x Wg^T); selection uses s + e_score_correction_bias; group score = sum of
  the top-2 biased scores in each group; keep topk_group groups; top-k of biased scores; weights =
  unbiased s of the chosen experts / their sum * routed_scaling_factor. Shared expert added unscaled.
* The bias is a buffer (not trained by gradient) updated by the auxiliary-loss-free rule in train.py.

Parameter names mirror the Hugging Face DeepSeek-V3 checkpoint names (see export.py).
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 3072
    hidden_size: int = 256
    intermediate_size: int = 768
    moe_intermediate_size: int = 128
    num_hidden_layers: int = 4
    first_k_dense_replace: int = 1
    num_attention_heads: int = 4
    q_lora_rank: int = 96
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    n_routed_experts: int = 16
    n_shared_experts: int = 1
    num_experts_per_tok: int = 4
    n_group: int = 4
    topk_group: int = 2
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 256
    initializer_range: float = 0.02
    bos_token_id: int = 0
    eos_token_id: int = 1
    num_nextn_predict_layers: int = 0

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_cos_sin(rope_dim, seqlen, theta, device=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32, device=device) / rope_dim))
    t = torch.arange(seqlen, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # [T, rope/2]
    return freqs.cos(), freqs.sin()


def apply_rope(x, cos, sin):
    """x [..., T, ..., rope]: rotate adjacent pairs (2i, 2i+1). cos/sin [T, rope/2] broadcast over x."""
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    o0 = x0 * cos - x1 * sin
    o1 = x0 * sin + x1 * cos
    return torch.stack((o0, o1), dim=-1).flatten(-2)


class MLA(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        H = c.num_attention_heads
        self.qk_head_dim = c.qk_nope_head_dim + c.qk_rope_head_dim
        self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
        self.q_b_proj = nn.Linear(c.q_lora_rank, H * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, H * (c.qk_nope_head_dim + c.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * c.v_head_dim, c.hidden_size, bias=False)
        self.softmax_scale = self.qk_head_dim ** -0.5

    def forward(self, x, cos, sin):
        c = self.c
        B, T, _ = x.shape
        H, dn, dr, dv = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, T, H, dn + dr)
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        q_pe = apply_rope(q_pe, cos[:, None, :], sin[:, None, :])          # [B,T,H,dr]
        kv = self.kv_a_proj_with_mqa(x)
        latent, k_pe = kv.split([c.kv_lora_rank, dr], dim=-1)
        k_pe = apply_rope(k_pe, cos, sin)                                  # [B,T,dr] shared by heads
        kv = self.kv_b_proj(self.kv_a_layernorm(latent)).view(B, T, H, dn + dv)
        k_nope, v = kv.split([dn, dv], dim=-1)
        # scores [B,H,T,T]
        scores = (torch.einsum("bthd,bshd->bhts", q_nope, k_nope)
                  + torch.einsum("bthd,bsd->bhts", q_pe, k_pe)) * self.softmax_scale
        mask = torch.full((T, T), float("-inf"), device=x.device).triu_(1)
        p = torch.softmax(scores.float() + mask, dim=-1).type_as(x)
        o = torch.einsum("bhts,bshd->bthd", p, v).reshape(B, T, H * dv)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, dim, inter):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter, bias=False)
        self.up_proj = nn.Linear(dim, inter, bias=False)
        self.down_proj = nn.Linear(inter, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    """Sigmoid router with e_score_correction_bias (noaux_tc), group-limited."""

    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(c.n_routed_experts))

    def forward(self, x, use_bias=True):
        """x [N, D] -> weights [N, k], indices [N, k], scores [N, E] (unbiased sigmoid)."""
        c = self.c
        scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))
        original = scores
        sel = scores.detach()
        if use_bias:
            sel = sel + self.e_score_correction_bias
        if c.n_group > 1:
            g = sel.view(x.size(0), c.n_group, -1)
            group_scores = g.topk(2, dim=-1)[0].sum(dim=-1)               # [N, n_group]
            keep = group_scores.topk(c.topk_group, dim=-1)[1]
            mask = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, keep, False)
            sel = g.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1)
        indices = sel.topk(c.num_experts_per_tok, dim=-1)[1]
        weights = original.gather(1, indices)
        if c.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights * c.routed_scaling_factor
        return weights.type_as(x), indices, scores


class MoE(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.gate = Gate(c)
        self.experts = nn.ModuleList([MLP(c.hidden_size, c.moe_intermediate_size) for _ in range(c.n_routed_experts)])
        self.shared_experts = MLP(c.hidden_size, c.n_shared_experts * c.moe_intermediate_size)
        self.last_indices = None   # [N, k] of the last forward (for load statistics / fixtures)
        self.last_weights = None

    def forward(self, x, use_bias=True):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, indices, _ = self.gate(x, use_bias)
        self.last_indices = indices.detach()
        self.last_weights = weights.detach()
        y = torch.zeros_like(x)
        flat_idx = indices.reshape(-1)
        order = torch.argsort(flat_idx, stable=True)
        counts = torch.bincount(flat_idx, minlength=self.c.n_routed_experts).tolist()
        tok = order // self.c.num_experts_per_tok
        w = weights.reshape(-1)[order]
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            t = tok[start:start + n]
            out = self.experts[e](x[t]) * w[start:start + n, None]
            y.index_add_(0, t, out)
            start += n
        y = y + self.shared_experts(x)
        return y.view(shape)


class Block(nn.Module):
    def __init__(self, c: Config, layer_id):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = MLA(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.is_moe = layer_id >= c.first_k_dense_replace
        self.mlp = MoE(c) if self.is_moe else MLP(c.hidden_size, c.intermediate_size)

    def forward(self, h, cos, sin, use_bias=True):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        x = self.post_attention_layernorm(h)
        h = h + (self.mlp(x, use_bias) if self.is_moe else self.mlp(x))
        return h


class SharedHead(nn.Module):
    """`shared_head`: its own RMSNorm; the output matrix `head` is the main model's lm_head unless the
    checkpoint stores a copy (DeepSeek-V3's release stores one; the bundled model does not, to stay
    within its size limit, see tools/train/README.md)."""

    def __init__(self, c: Config):
        super().__init__()
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.head = None


class MTPLayer(Block):
    """One Multi-Token Prediction module (DeepSeek-V3 §2.2) in the checkpoint layout of
    `model.layers.<num_hidden_layers + k>`: enorm, hnorm, eh_proj, shared_head.norm (+ optional
    embed_tokens / shared_head.head copies) and a full decoder block (layer index >= first_k_dense_replace,
    so an MoE block). The forward follows vLLM's DeepSeekMultiTokenPredictorLayer line by line:

        inputs_embeds[positions == 0] = 0
        h = eh_proj(cat([enorm(inputs_embeds), hnorm(previous_hidden_states)], -1))   # embedding FIRST
        h = block(h)                         # attention over this layer's own cache, same positions
        logits = head(shared_head.norm(h))

    previous_hidden_states is the main model's output after its final norm (what vLLM's DeepseekV2Model
    returns and its MTP proposer passes on); the embedding at position i is that of token i+1. The
    technical report writes the concatenation as [h; emb]; the released code and weights use [emb; h].
    """

    def __init__(self, c: Config, layer_id):
        super().__init__(c, layer_id)
        self.enorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.hnorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * c.hidden_size, c.hidden_size, bias=False)
        self.shared_head = SharedHead(c)
        self.embed_tokens = None   # nn.Embedding when the checkpoint stores the copy

    def mtp_forward(self, emb, prev_hidden, positions, cos, sin, use_bias=True):
        emb = emb.masked_fill((positions == 0)[None, :, None], 0.0)
        h = self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(prev_hidden)], dim=-1))
        return Block.forward(self, h, cos, sin, use_bias)


class Transformer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block(c, i) for i in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.mtp_layers = nn.ModuleList([MTPLayer(c, c.num_hidden_layers + k) for k in range(c.num_nextn_predict_layers)])
        self.reset_parameters()

    def reset_parameters(self):
        std = self.c.initializer_range
        n_resid = 2 * self.c.num_hidden_layers
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue  # norms stay at 1
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, std=std / math.sqrt(n_resid))
            else:
                nn.init.normal_(p, std=std)

    def moe_layers(self):
        return [(i, l.mlp) for i, l in enumerate(self.layers) if l.is_moe]

    def forward(self, tokens, use_bias=True, return_hidden=False):
        T = tokens.shape[1]
        cos, sin = rope_cos_sin(self.c.qk_rope_head_dim, T, self.c.rope_theta, tokens.device)
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, use_bias)
        hn = self.norm(h)
        logits = self.lm_head(hn)
        return (logits, hn) if return_hidden else logits

    def mtp_logits(self, next_tokens, prev_hidden, depth=0, use_bias=True, return_hidden=False):
        """MTP module `depth` over positions 0..T-1: next_tokens[:, i] is the token at position i+1,
        prev_hidden[:, i] the main model's final-norm output at position i (for depth > 0: the previous
        module's block output). Returns the logits predicting the token at position i+1+depth+1."""
        m = self.mtp_layers[depth]
        T = next_tokens.shape[1]
        cos, sin = rope_cos_sin(self.c.qk_rope_head_dim, T, self.c.rope_theta, next_tokens.device)
        emb = (m.embed_tokens if m.embed_tokens is not None else self.embed_tokens)(next_tokens)
        positions = torch.arange(T, device=next_tokens.device)
        h = m.mtp_forward(emb, prev_hidden, positions, cos, sin, use_bias)
        head = m.shared_head.head if m.shared_head.head is not None else self.lm_head
        logits = head(m.shared_head.norm(h))
        return (logits, h) if return_hidden else logits


def hf_state_dict(model: Transformer):
    """Parameters + gate biases under Hugging Face DeepSeek-V3 tensor names (float32 tensors)."""
    out = {}
    L = model.c.num_hidden_layers
    for k, v in model.state_dict().items():
        if k.startswith("mtp_layers."):
            _, idx, rest = k.split(".", 2)
            k = f"layers.{L + int(idx)}.{rest}"
        name = k if k.startswith("lm_head") else "model." + k
        out[name] = v.detach().float().contiguous()
    return out


def count_params(c: Config):
    """(total, active per token) parameter counts, excluding the gate bias buffers."""
    D = c.hidden_size
    H = c.num_attention_heads
    attn = (D * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * H * (c.qk_nope_head_dim + c.qk_rope_head_dim)
            + D * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
            + c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * D)
    norms = 2 * D
    dense = 3 * D * c.intermediate_size
    expert = 3 * D * c.moe_intermediate_size
    moe_total = c.n_routed_experts * D + c.n_routed_experts * expert + c.n_shared_experts * expert
    moe_active = c.n_routed_experts * D + c.num_experts_per_tok * expert + c.n_shared_experts * expert
    nd = c.first_k_dense_replace
    nm = c.num_hidden_layers - nd
    emb = c.vocab_size * D
    total = 2 * emb + D + c.num_hidden_layers * (attn + norms) + nd * dense + nm * moe_total
    active = 2 * emb + D + c.num_hidden_layers * (attn + norms) + nd * dense + nm * moe_active
    return total, active


HF_CONFIG_FIXED = {
    "ep_size": 1, "topk_method": "noaux_tc", "moe_layer_freq": 1,
    "scoring_func": "sigmoid", "hidden_act": "silu", "use_cache": True, "tie_word_embeddings": False,
    "rope_scaling": None, "rope_interleave": True, "attention_bias": False, "attention_dropout": 0.0,
}


def hf_config(c: Config, torch_dtype="float16"):
    """config.json in the Hugging Face DeepSeek-V3 format (same fields as the reference fixture)."""
    d = c.to_dict()
    out = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}
    keys = ["vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
            "num_nextn_predict_layers", "num_attention_heads", "num_key_value_heads", "n_shared_experts",
            "n_routed_experts", "ep_size", "routed_scaling_factor", "kv_lora_rank", "q_lora_rank",
            "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim", "topk_method", "n_group", "topk_group",
            "num_experts_per_tok", "moe_layer_freq", "first_k_dense_replace", "norm_topk_prob", "scoring_func",
            "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache",
            "bos_token_id", "eos_token_id", "tie_word_embeddings", "rope_theta", "rope_scaling", "rope_interleave",
            "attention_bias", "attention_dropout"]
    for k in keys:
        if k == "num_key_value_heads":
            out[k] = c.num_attention_heads
        elif k in HF_CONFIG_FIXED:
            out[k] = HF_CONFIG_FIXED[k]
        else:
            out[k] = d[k]
    out["torch_dtype"] = torch_dtype
    return out


def config_from_hf(h):
    fields = Config.__dataclass_fields__
    return Config(**{k: h[k] for k in fields if k in h})


def load_hf_model(model_dir):
    """Build a float32 Transformer from <model_dir>/{config.json, model.safetensors} (any stored dtype)."""
    import json
    import os
    from st_io import load_safetensors
    with open(os.path.join(model_dir, "config.json")) as f:
        c = config_from_hf(json.load(f))
    tensors, _ = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    model = Transformer(c)
    sd = {}
    L = c.num_hidden_layers
    for k, v in tensors.items():
        k = k[len("model."):] if k.startswith("model.") else k
        parts = k.split(".", 2)
        if parts[0] == "layers" and int(parts[1]) >= L:
            k = f"mtp_layers.{int(parts[1]) - L}.{parts[2]}"
        sd[k] = torch.from_numpy(v.astype("float32"))
    for i, m in enumerate(model.mtp_layers):
        # optional copies of the shared embedding / output head (DeepSeek-V3's release stores them)
        e = sd.pop(f"mtp_layers.{i}.embed_tokens.weight", None)
        if e is not None:
            m.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
            m.embed_tokens.weight.data.copy_(e)
        hd = sd.pop(f"mtp_layers.{i}.shared_head.head.weight", None)
        if hd is not None:
            m.shared_head.head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
            m.shared_head.head.weight.data.copy_(hd)
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model
