#!/usr/bin/env python3
"""Tiny random-weight checkpoints of the Llama-style MoE families, with PyTorch float32 reference logits
and expert routing, for webmoe's family tests (test/unit/families.test.ts, test/gpu/families.test.ts).

Each family's reference below follows the official Hugging Face modeling file of that family module by
module (names in the comments): modeling_qwen2_moe.py, modeling_qwen3_moe.py, modeling_olmoe.py,
modeling_mixtral.py, modeling_granitemoe.py, modeling_gpt_oss.py (with integrations/mxfp4.py's
convert_moe_packed_tensors for the MXFP4 experts) (transformers main as of Dec 2026; transformers itself is not
installed here, so the modules are re-stated in plain torch). Tensor names and config keys are those of
the published checkpoints.

  /usr/bin/python3 tools/families/make_fixtures.py --out test/fixtures/families

Writes <out>/<family>/{config.json, model.safetensors, logits.f32.bin, routing.json, reference.json}.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'train'))
from st_io import save_safetensors  # noqa: E402

torch.set_num_threads(1)
SEQ_LEN = 24
PREFILL_SPLIT = 13
MIN_GAP = 5e-4

# --------------------------------------------------------------------------------------------- configs
# Tiny widths; every key is the published config.json's key (values tiny, flags as in the real models).
BASE = dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            hidden_act='silu', max_position_embeddings=256, initializer_range=0.02, use_cache=True,
            rope_scaling=None, attention_dropout=0.0, torch_dtype='float32', tie_word_embeddings=False)

CONFIGS = {
    'qwen2_moe': dict(BASE, architectures=['Qwen2MoeForCausalLM'], model_type='qwen2_moe', intermediate_size=48,
                      moe_intermediate_size=16, shared_expert_intermediate_size=40, num_experts=8, num_experts_per_tok=4,
                      norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6,
                      rope_theta=1000000.0, use_sliding_window=False, sliding_window=32768, max_window_layers=2,
                      bos_token_id=1, eos_token_id=2, router_aux_loss_coef=0.001, output_router_logits=False),
    # head_dim 16 ≠ hidden_size / heads = 8, as in Qwen3-30B-A3B (head_dim 128, hidden 2048, 32 heads).
    'qwen3_moe': dict(BASE, architectures=['Qwen3MoeForCausalLM'], model_type='qwen3_moe', intermediate_size=48,
                      moe_intermediate_size=16, num_experts=16, num_experts_per_tok=4, head_dim=16, norm_topk_prob=True,
                      decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6, rope_theta=1000000.0, attention_bias=False,
                      use_sliding_window=False, sliding_window=None, max_window_layers=2, bos_token_id=1, eos_token_id=2,
                      router_aux_loss_coef=0.001, output_router_logits=False),
    'olmoe': dict(BASE, architectures=['OlmoeForCausalLM'], model_type='olmoe', intermediate_size=16, num_experts=8,
                  num_experts_per_tok=4, norm_topk_prob=False, rms_norm_eps=1e-5, rope_theta=10000.0, attention_bias=False,
                  clip_qkv=None, bos_token_id=None, eos_token_id=2, pad_token_id=1, router_aux_loss_coef=0.01,
                  output_router_logits=False, num_key_value_heads=4),
    'mixtral': dict(BASE, architectures=['MixtralForCausalLM'], model_type='mixtral', intermediate_size=16,
                    num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None,
                    bos_token_id=1, eos_token_id=2, router_aux_loss_coef=0.02, output_router_logits=False),
    'granitemoe': dict(BASE, architectures=['GraniteMoeForCausalLM'], model_type='granitemoe', intermediate_size=16,
                       num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-6, rope_theta=10000.0, attention_bias=False,
                       embedding_multiplier=12.0, attention_multiplier=0.0625, residual_multiplier=0.22, logits_scaling=6.0,
                       position_embedding_type='rope', tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                       pad_token_id=0, router_aux_loss_coef=0.001, output_router_logits=False),
    # Sliding windows past the window: window 6 < the 13-token prefill < the 24-token sequence, so prefill, decode and
    # prefill-then-decode each attend through it. Mixtral: every layer (sliding_window set); Qwen3-MoE: every layer
    # (use_sliding_window); Qwen2-MoE: layer_types[i] = sliding_attention layers only (here layer 0, as
    # configuration_qwen2_moe.py derives for max_window_layers 2; written out so that no version's default matters).
    'mixtral_swa': dict(BASE, architectures=['MixtralForCausalLM'], model_type='mixtral', intermediate_size=16,
                        num_local_experts=8, num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=6,
                        bos_token_id=1, eos_token_id=2, router_aux_loss_coef=0.02, output_router_logits=False),
    'qwen2_moe_swa': dict(BASE, architectures=['Qwen2MoeForCausalLM'], model_type='qwen2_moe', intermediate_size=48,
                          moe_intermediate_size=16, shared_expert_intermediate_size=40, num_experts=8, num_experts_per_tok=4,
                          norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6,
                          rope_theta=1000000.0, use_sliding_window=True, sliding_window=6, max_window_layers=2,
                          layer_types=['sliding_attention', 'full_attention'],
                          bos_token_id=1, eos_token_id=2, router_aux_loss_coef=0.001, output_router_logits=False),
    'qwen3_moe_swa': dict(BASE, architectures=['Qwen3MoeForCausalLM'], model_type='qwen3_moe', intermediate_size=48,
                          moe_intermediate_size=16, num_experts=16, num_experts_per_tok=4, head_dim=16, norm_topk_prob=True,
                          decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6, rope_theta=1000000.0, attention_bias=False,
                          use_sliding_window=True, sliding_window=6, max_window_layers=2, bos_token_id=1, eos_token_id=2,
                          router_aux_loss_coef=0.001, output_router_logits=False),
    # gpt-oss-20b's keys at tiny widths: hidden 64 (two MXFP4 blocks per gate_up row), expert width 32, 8 heads of
    # 16 (q width 128 ≠ hidden, as 64×64 ≠ 2880), sliding window 8 < the 24-token sequence on the sliding layer,
    # YaRN as published (factor 32 of 4096, truncate false: with head_dim 16 the ramp runs over pairs 2.02…4.35).
    'gpt_oss': dict(BASE, architectures=['GptOssForCausalLM'], model_type='gpt_oss', hidden_size=64, intermediate_size=32,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=16, num_local_experts=8, num_experts_per_tok=4,
                    experts_per_token=4, layer_types=['sliding_attention', 'full_attention'], sliding_window=8,
                    attention_bias=True, swiglu_limit=7.0, rms_norm_eps=1e-5, rope_theta=150000.0,
                    rope_scaling=dict(beta_fast=32.0, beta_slow=1.0, factor=32.0, original_max_position_embeddings=4096,
                                      rope_type='yarn', truncate=False),
                    max_position_embeddings=131072, initial_context_length=4096, eos_token_id=2, pad_token_id=1,
                    router_aux_loss_coef=0.9, output_router_logits=False,
                    quantization_config=dict(modules_to_not_convert=['model.layers.*.self_attn', 'model.layers.*.mlp.router',
                                                                     'model.embed_tokens', 'lm_head'], quant_method='mxfp4')),
}

# ---------------------------------------------------------------------------------------- shared modules

def rms_norm(x, w, eps):
    """*RMSNorm.forward: float32 variance, x·rsqrt(var + eps), then weight ·."""
    x = x.to(torch.float32)
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotary(cfg, head_dim, positions):
    """*RotaryEmbedding (rope_type default): inv_freq = 1/θ^(2i/d); emb = cat(freqs, freqs); cos, sin."""
    inv_freq = 1.0 / (cfg['rope_theta'] ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    """q, k [heads, S, d]; cos, sin [S, d] (unsqueezed over heads)."""
    return q * cos[None] + rotate_half(q) * sin[None], k * cos[None] + rotate_half(k) * sin[None]


def repeat_kv(x, n_rep):
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=0)


def eager_attention(q, k, v, scaling, n_rep, sliding_window=None):
    """eager_attention_forward: softmax(q·kᵀ·scaling + mask, fp32)·v over [heads, S, d]. The mask is masking_utils'
    create_causal_mask (kv_idx ≤ q_idx), or with a window create_sliding_window_causal_mask: causal and
    sliding_window_overlay (kv_idx > q_idx − sliding_window)."""
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    S = q.shape[1]
    scores = torch.matmul(q, k.transpose(1, 2)) * scaling
    qi, ki = torch.arange(S)[:, None], torch.arange(S)[None, :]
    visible = ki <= qi
    if sliding_window is not None:
        visible = visible & (ki > qi - sliding_window)
    mask = torch.where(visible, 0.0, float('-inf'))
    p = F.softmax(scores + mask, dim=-1, dtype=torch.float32)
    return torch.matmul(p, v).transpose(0, 1).reshape(S, -1)


def linear(x, w, b=None):
    return F.linear(x, w, b)


def mlp(x, gate, up, down):
    """*MLP / *BlockSparseTop2MLP: down(act(gate(x)) · up(x))."""
    return linear(F.silu(linear(x, gate)) * linear(x, up), down)

# ----------------------------------------------------------------------------------------- the families

class Model:
    """One family's forward over a whole sequence (positions 0..S-1), recording each MoE layer's routing."""

    def __init__(self, family, cfg, W):
        self.f, self.c, self.W = family, cfg, W
        self.routing = {}
        self.min_gap = float('inf')  # smallest gap between the k-th and (k+1)-th router score (ties would make routing rounding-dependent)

    def note_gap(self, scores, K):
        top = scores.topk(min(K + 1, scores.shape[-1]), dim=-1).values
        if top.shape[-1] > K:
            self.min_gap = min(self.min_gap, float((top[:, K - 1] - top[:, K]).min()))

    def head_dim(self):
        c = self.c
        return c.get('head_dim') or c['hidden_size'] // c['num_attention_heads']

    def attention(self, i, x, positions):
        c, W, f = self.c, self.W, self.f
        p = f'model.layers.{i}.self_attn.'
        H, Hkv, d = c['num_attention_heads'], c['num_key_value_heads'], self.head_dim()
        S = x.shape[0]
        bias = f == 'qwen2_moe'  # Qwen2MoeAttention: q/k/v_proj bias=True
        q = linear(x, W[p + 'q_proj.weight'], W[p + 'q_proj.bias'] if bias else None)
        k = linear(x, W[p + 'k_proj.weight'], W[p + 'k_proj.bias'] if bias else None)
        v = linear(x, W[p + 'v_proj.weight'], W[p + 'v_proj.bias'] if bias else None)
        if f == 'olmoe':
            # OlmoeAttention: q_norm(q_proj(x)), k_norm(k_proj(x)) over the full projection, before the head split.
            q = rms_norm(q, W[p + 'q_norm.weight'], c['rms_norm_eps'])
            k = rms_norm(k, W[p + 'k_norm.weight'], c['rms_norm_eps'])
        q = q.view(S, H, d)
        k = k.view(S, Hkv, d)
        if f == 'qwen3_moe':
            # Qwen3MoeAttention: q_norm(q_proj(x).view(hidden_shape)), per head over head_dim.
            q = rms_norm(q, W[p + 'q_norm.weight'], c['rms_norm_eps'])
            k = rms_norm(k, W[p + 'k_norm.weight'], c['rms_norm_eps'])
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.view(S, Hkv, d).transpose(0, 1)
        cos, sin = rotary(c, d, positions)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        scaling = c['attention_multiplier'] if f == 'granitemoe' else d ** -0.5
        o = eager_attention(q, k, v, scaling, H // Hkv, self.sliding_window(i))
        return linear(o, W[p + 'o_proj.weight'])

    def sliding_window(self, i):
        """Layer i's window, or None for create_causal_mask. MixtralModel (and Qwen3MoeModel, which is MixtralModel):
        create_sliding_window_causal_mask on every layer once config.sliding_window is set (Qwen3MoeConfig sets it
        only with use_sliding_window). Qwen2MoeModel: the mask of config.layer_types[i] (Qwen2MoeConfig: the window
        only with use_sliding_window; layer_types by default sliding on even layers below max_window_layers)."""
        c, f = self.c, self.f
        if f == 'mixtral':
            return c.get('sliding_window')
        if f == 'qwen3_moe':
            return c['sliding_window'] if c.get('use_sliding_window') else None
        if f == 'qwen2_moe' and c.get('use_sliding_window'):
            types = c.get('layer_types') or ['sliding_attention' if (j + 1) % 2 and j < c['max_window_layers'] else 'full_attention'
                                             for j in range(c['num_hidden_layers'])]
            return c['sliding_window'] if types[i] == 'sliding_attention' else None
        return None

    def moe(self, i, x):
        c, W, f = self.c, self.W, self.f
        K = c['num_experts_per_tok']
        if f == 'granitemoe':
            # GraniteMoeMoE: logits = router.layer(x); top-k logits; softmax over them; ParallelExperts.
            p = f'model.layers.{i}.block_sparse_moe.'
            logits = linear(x, W[p + 'router.layer.weight'])
            w, sel = logits.topk(K, dim=-1)
            self.note_gap(logits, K)
            w = F.softmax(w.float(), dim=-1)
            out = torch.zeros_like(x)
            for t in range(x.shape[0]):
                for j in range(K):
                    e = int(sel[t, j])
                    h = F.linear(x[t], W[p + 'input_linear.weight'][e])
                    g, u = h.chunk(2, dim=-1)
                    out[t] += w[t, j] * F.linear(F.silu(g) * u, W[p + 'output_linear.weight'][e])
            self.routing[i] = sel.tolist()
            return out
        mixtral = f == 'mixtral'
        p = f'model.layers.{i}.block_sparse_moe.' if mixtral else f'model.layers.{i}.mlp.'
        # *SparseMoeBlock: softmax over all experts (float), top-k, renormalise when norm_topk_prob
        # (Mixtral always: routing_weights /= routing_weights.sum).
        logits = linear(x, W[p + 'gate.weight'])
        probs = F.softmax(logits, dim=1, dtype=torch.float)
        w, sel = torch.topk(probs, K, dim=-1)
        self.note_gap(probs, K)
        if mixtral or c.get('norm_topk_prob'):
            w = w / w.sum(dim=-1, keepdim=True)
        names = ('w1', 'w3', 'w2') if mixtral else ('gate_proj', 'up_proj', 'down_proj')
        out = torch.zeros_like(x)
        for t in range(x.shape[0]):
            for j in range(K):
                e = int(sel[t, j])
                q = f'{p}experts.{e}.'
                out[t] += w[t, j] * mlp(x[t], *(W[q + n + '.weight'] for n in names))
        if f == 'qwen2_moe':
            # Qwen2MoeSparseMoeBlock: shared_expert(x) · sigmoid(shared_expert_gate(x)).
            s = mlp(x, W[p + 'shared_expert.gate_proj.weight'], W[p + 'shared_expert.up_proj.weight'], W[p + 'shared_expert.down_proj.weight'])
            out = out + torch.sigmoid(linear(x, W[p + 'shared_expert_gate.weight'])) * s
        self.routing[i] = sel.tolist()
        return out

    def is_moe(self, i):
        c = self.c
        if self.f in ('qwen2_moe', 'qwen3_moe'):
            return i not in c['mlp_only_layers'] and (i + 1) % c['decoder_sparse_step'] == 0
        return True

    def forward(self, tokens):
        c, W, f = self.c, self.W, self.f
        eps = c['rms_norm_eps']
        h = W['model.embed_tokens.weight'][tokens]
        if f == 'granitemoe':
            h = h * c['embedding_multiplier']
        residual_mul = c['residual_multiplier'] if f == 'granitemoe' else 1.0
        positions = torch.arange(len(tokens))
        for i in range(c['num_hidden_layers']):
            p = f'model.layers.{i}.'
            a = self.attention(i, rms_norm(h, W[p + 'input_layernorm.weight'], eps), positions)
            h = h + a * residual_mul if f == 'granitemoe' else h + a
            x = rms_norm(h, W[p + 'post_attention_layernorm.weight'], eps)
            m = self.moe(i, x) if self.is_moe(i) else mlp(x, W[p + 'mlp.gate_proj.weight'], W[p + 'mlp.up_proj.weight'], W[p + 'mlp.down_proj.weight'])
            h = h + m * residual_mul if f == 'granitemoe' else h + m
        h = rms_norm(h, W['model.norm.weight'], eps)
        head = W['model.embed_tokens.weight'] if c['tie_word_embeddings'] else W['lm_head.weight']
        logits = linear(h, head)
        if f == 'granitemoe':
            logits = logits / c['logits_scaling']
        return logits

# -------------------------------------------------------------------------------------------- GPT-OSS

FP4_VALUES = [+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def convert_moe_packed_tensors(blocks, scales, dtype=torch.float32):
    """integrations/mxfp4.py convert_moe_packed_tensors (one chunk): blocks [E, N, G, 16] u8, scales [E, N, G] u8
    → [E, G·32, N]: low nibble = element 2i, high nibble 2i + 1, times 2^(scale − 127), transposed for x @ W."""
    scales = scales.to(torch.int32) - 127
    lut = torch.tensor(FP4_VALUES, dtype=dtype)
    *prefix_shape, G, B = blocks.shape
    rows_total = math.prod(prefix_shape) * G
    blocks = blocks.reshape(rows_total, B)
    scales = scales.reshape(rows_total, 1)
    out = torch.empty(rows_total, B * 2, dtype=dtype)
    idx_lo = (blocks & 0x0F).to(torch.long)
    idx_hi = (blocks >> 4).to(torch.long)
    out[:, 0::2] = lut[idx_lo]
    out[:, 1::2] = lut[idx_hi]
    torch.ldexp(out, scales, out=out)
    out = out.reshape(*prefix_shape, G, B * 2).view(*prefix_shape, G * B * 2)
    return out.transpose(1, 2).contiguous()


def yarn_inv_freq(c, dim):
    """modeling_rope_utils._compute_yarn_parameters (truncate from rope_scaling): inv_freq and attention_factor."""
    rs, base = c['rope_scaling'], c['rope_theta']
    factor = rs['factor']
    orig = rs['original_max_position_embeddings']
    factor = c['max_position_embeddings'] / orig  # as transformers versions that derive factor from the two lengths do (= rope_scaling.factor, 32, in gpt-oss's configs)

    def get_mscale(scale, mscale=1):
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = get_mscale(factor)
    beta_fast, beta_slow = rs.get('beta_fast') or 32, rs.get('beta_slow') or 1

    def find_correction_dim(num_rotations):
        return (dim * math.log(orig / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = find_correction_dim(beta_fast), find_correction_dim(beta_slow)
    if rs.get('truncate', True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp
    inv_freq = inv_freq_interpolation * (1 - extrapolation_factor) + inv_freq_extrapolation * extrapolation_factor
    return inv_freq, attention_factor


class GptOss:
    """GptOssForCausalLM, module by module (modeling_gpt_oss.py), on the dequantised MXFP4 experts."""

    def __init__(self, cfg, W):
        self.c, self.W = cfg, W
        self.routing = {}
        self.min_gap = float('inf')
        self.clamped = 0  # gate/up pre-activations past swiglu_limit (the clamp is exercised)
        E = cfg['num_local_experts']
        self.experts = {}
        for i in range(cfg['num_hidden_layers']):
            p = f'model.layers.{i}.mlp.experts.'
            # Mxfp4GptOssExperts → GptOssExperts parameters: gate_up_proj [E, D, 2I], down_proj [E, I, D].
            self.experts[i] = (convert_moe_packed_tensors(W[p + 'gate_up_proj_blocks'], W[p + 'gate_up_proj_scales']),
                               convert_moe_packed_tensors(W[p + 'down_proj_blocks'], W[p + 'down_proj_scales']))
            assert self.experts[i][0].shape == (E, cfg['hidden_size'], 2 * cfg['intermediate_size'])

    def rotary(self, positions):
        """GptOssRotaryEmbedding.forward: freqs = inv_freq ⊗ positions (not duplicated); cos, sin · attention_scaling."""
        inv_freq, attention_scaling = yarn_inv_freq(self.c, self.c['head_dim'])
        freqs = positions.float()[:, None] * inv_freq[None, :]
        return freqs.cos() * attention_scaling, freqs.sin() * attention_scaling

    @staticmethod
    def apply_rotary_emb(x, cos, sin):
        """_apply_rotary_emb: halves (first_half, second_half = chunk(x, 2))."""
        first_half, second_half = torch.chunk(x, 2, dim=-1)
        first_ = first_half * cos - second_half * sin
        second_ = second_half * cos + first_half * sin
        return torch.cat((first_, second_), dim=-1)

    def attention(self, i, x, positions):
        """GptOssAttention.forward + eager_attention_forward with sinks; sliding layers mask kv_idx ≤ q_idx − window."""
        c, W = self.c, self.W
        p = f'model.layers.{i}.self_attn.'
        H, Hkv, d = c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
        S = x.shape[0]
        q = linear(x, W[p + 'q_proj.weight'], W[p + 'q_proj.bias']).view(S, H, d).transpose(0, 1)
        k = linear(x, W[p + 'k_proj.weight'], W[p + 'k_proj.bias']).view(S, Hkv, d).transpose(0, 1)
        v = linear(x, W[p + 'v_proj.weight'], W[p + 'v_proj.bias']).view(S, Hkv, d).transpose(0, 1)
        cos, sin = self.rotary(positions)
        q, k = self.apply_rotary_emb(q, cos[None], sin[None]), self.apply_rotary_emb(k, cos[None], sin[None])
        k, v = repeat_kv(k, H // Hkv), repeat_kv(v, H // Hkv)
        attn_weights = torch.matmul(q, k.transpose(1, 2)) * d ** -0.5
        qi, ki = torch.arange(S)[:, None], torch.arange(S)[None, :]
        visible = ki <= qi
        if c['layer_types'][i] == 'sliding_attention':
            visible = visible & (ki > qi - c['sliding_window'])
        attn_weights = attn_weights + torch.where(visible, 0.0, float('-inf'))[None]
        sinks = W[p + 'sinks'].reshape(-1, 1, 1).expand(-1, S, -1)
        combined_logits = torch.cat([attn_weights, sinks], dim=-1)
        combined_logits = combined_logits - combined_logits.max(dim=-1, keepdim=True).values
        probs = F.softmax(combined_logits, dim=-1, dtype=combined_logits.dtype)
        scores = probs[..., :-1]
        o = torch.matmul(scores, v).transpose(0, 1).reshape(S, -1)
        return linear(o, W[p + 'o_proj.weight'], W[p + 'o_proj.bias'])

    def mlp(self, i, x):
        """GptOssMLP: GptOssTopKRouter (linear with bias, top-k logits, softmax over them) → GptOssExperts (CPU branch)."""
        c, W = self.c, self.W
        p = f'model.layers.{i}.mlp.'
        K, E = c['num_experts_per_tok'], c['num_local_experts']
        router_logits = F.linear(x, W[p + 'router.weight'], W[p + 'router.bias'])
        router_top_value, router_indices = torch.topk(router_logits, K, dim=-1)
        self.note_gap(router_logits, K)
        router_top_value = F.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
        routing_weights = torch.zeros_like(router_logits).scatter_(1, router_indices, router_top_value)
        gate_up_proj, down_proj = self.experts[i]
        gate_up_proj_bias, down_proj_bias = W[p + 'experts.gate_up_proj_bias'], W[p + 'experts.down_proj_bias']
        alpha, limit = 1.702, c['swiglu_limit']
        next_states = torch.zeros_like(x)
        expert_mask = F.one_hot(router_indices, num_classes=E).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in expert_hit[:]:
            expert_idx = expert_idx[0]
            _, token_idx = torch.where(expert_mask[expert_idx])
            current_state = x[token_idx]
            gate_up = current_state @ gate_up_proj[expert_idx] + gate_up_proj_bias[expert_idx]
            gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            self.clamped += int((gate > limit).sum() + (up.abs() > limit).sum())
            gate = gate.clamp(min=None, max=limit)
            up = up.clamp(min=-limit, max=limit)
            glu = gate * torch.sigmoid(gate * alpha)
            gated_output = (up + 1) * glu
            out = gated_output @ down_proj[expert_idx] + down_proj_bias[expert_idx]
            weighted_output = out * routing_weights[token_idx, expert_idx, None]
            next_states.index_add_(0, token_idx, weighted_output.to(x.dtype))
        self.routing[i] = router_indices.tolist()
        return next_states

    def note_gap(self, scores, K):
        top = scores.topk(K + 1, dim=-1).values
        self.min_gap = min(self.min_gap, float((top[:, K - 1] - top[:, K]).min()))

    def forward(self, tokens):
        """GptOssModel.forward + lm_head: pre-norm residual layers, final RMSNorm."""
        c, W = self.c, self.W
        eps = c['rms_norm_eps']
        h = W['model.embed_tokens.weight'][tokens]
        positions = torch.arange(len(tokens))
        for i in range(c['num_hidden_layers']):
            p = f'model.layers.{i}.'
            h = h + self.attention(i, rms_norm(h, W[p + 'input_layernorm.weight'], eps), positions)
            h = h + self.mlp(i, rms_norm(h, W[p + 'post_attention_layernorm.weight'], eps))
        return linear(rms_norm(h, W['model.norm.weight'], eps), W['lm_head.weight'])


def make_gptoss_weights(c, g):
    """gpt-oss tensors under their published names: MXFP4 experts (random nibbles, E8M0 scales around 2^-4 so
    that rows have std ≈ K^-0.5·√K·… O(1) pre-activations), everything else float."""
    D, H, Hkv, V, d = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads'], c['vocab_size'], c['head_dim']
    E, I = c['num_local_experts'], c['intermediate_size']
    n = lambda *s, std: torch.randn(*s, generator=g) * std
    norm = lambda k: 1.0 + n(k, std=0.2)
    u8 = lambda hi, *s, lo=0: torch.randint(lo, hi, s, generator=g, dtype=torch.int64).to(torch.uint8)
    W = {'model.embed_tokens.weight': n(V, D, std=1.0)}
    for i in range(c['num_hidden_layers']):
        p = f'model.layers.{i}.'
        W[p + 'input_layernorm.weight'] = norm(D)
        a = p + 'self_attn.'
        for proj, rows, k in (('q_proj', H * d, D), ('k_proj', Hkv * d, D), ('v_proj', Hkv * d, D), ('o_proj', D, H * d)):
            W[a + proj + '.weight'] = n(rows, k, std=k ** -0.5)
            W[a + proj + '.bias'] = n(rows, std=0.3)
        W[a + 'sinks'] = n(H, std=1.0)
        W[p + 'post_attention_layernorm.weight'] = norm(D)
        m = p + 'mlp.'
        W[m + 'router.weight'] = n(E, D, std=2 * D ** -0.5)
        W[m + 'router.bias'] = n(E, std=0.5)
        # FP4 magnitudes average ≈ 2.3: scale 2^-5 … 2^-3 gives rows of std ≈ 0.1 (D = 64), pre-activations O(1);
        # the gate_up bias (std 3) pushes a share of them past the limit 7 so the clamp is exercised.
        W[m + 'experts.gate_up_proj_blocks'] = u8(256, E, 2 * I, D // 32, 16)
        W[m + 'experts.gate_up_proj_scales'] = u8(125, E, 2 * I, D // 32, lo=122)
        W[m + 'experts.gate_up_proj_bias'] = n(E, 2 * I, std=3.0)
        W[m + 'experts.down_proj_blocks'] = u8(256, E, D, I // 32, 16)
        W[m + 'experts.down_proj_scales'] = u8(123, E, D, I // 32, lo=120)
        W[m + 'experts.down_proj_bias'] = n(E, D, std=0.3)
    W['model.norm.weight'] = norm(D)
    W['lm_head.weight'] = n(V, D, std=D ** -0.5)
    return W

# ------------------------------------------------------------------------------------------- weights

def make_weights(family, c, g):
    """Random weights under the published tensor names, in model order. Scales keep activations O(1)
    and router logits spread (so that top-k choices are far from ties)."""
    D, H, Hkv, V = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads'], c['vocab_size']
    d = c.get('head_dim') or D // H
    W = {}
    n = lambda *s, std: torch.randn(*s, generator=g) * std
    norm = lambda k: 1.0 + n(k, std=0.2)
    W['model.embed_tokens.weight'] = n(V, D, std=1.0 if family != 'granitemoe' else 0.1)
    for i in range(c['num_hidden_layers']):
        p = f'model.layers.{i}.'
        W[p + 'input_layernorm.weight'] = norm(D)
        a = p + 'self_attn.'
        for proj, rows in (('q_proj', H * d), ('k_proj', Hkv * d), ('v_proj', Hkv * d)):
            W[a + proj + '.weight'] = n(rows, D, std=D ** -0.5)
            if family == 'qwen2_moe':
                W[a + proj + '.bias'] = n(rows, std=0.3)
        if family == 'qwen3_moe':
            W[a + 'q_norm.weight'], W[a + 'k_norm.weight'] = norm(d), norm(d)
        if family == 'olmoe':
            W[a + 'q_norm.weight'], W[a + 'k_norm.weight'] = norm(H * d), norm(Hkv * d)
        W[a + 'o_proj.weight'] = n(D, H * d, std=(H * d) ** -0.5)
        W[p + 'post_attention_layernorm.weight'] = norm(D)
        if family == 'granitemoe':
            E, I = c['num_local_experts'], c['intermediate_size']
            m = p + 'block_sparse_moe.'
            W[m + 'input_linear.weight'] = n(E, 2 * I, D, std=D ** -0.5)
            W[m + 'output_linear.weight'] = n(E, D, I, std=I ** -0.5)
            W[m + 'router.layer.weight'] = n(E, D, std=2 * D ** -0.5)
            continue
        mixtral = family == 'mixtral'
        E = c['num_local_experts'] if mixtral else c['num_experts']
        I = c['moe_intermediate_size'] if family.startswith('qwen') else c['intermediate_size']
        m = p + ('block_sparse_moe.' if mixtral else 'mlp.')
        W[m + 'gate.weight'] = n(E, D, std=2 * D ** -0.5)
        for e in range(E):
            for name, shape in ((('w1', 'w3', 'w2') if mixtral else ('gate_proj', 'up_proj', 'down_proj'))[0], (I, D)), \
                               ((('w1', 'w3', 'w2') if mixtral else ('gate_proj', 'up_proj', 'down_proj'))[1], (I, D)), \
                               ((('w1', 'w3', 'w2') if mixtral else ('gate_proj', 'up_proj', 'down_proj'))[2], (D, I)):
                W[f'{m}experts.{e}.{name}.weight'] = n(*shape, std=shape[1] ** -0.5)
        if family == 'qwen2_moe':
            Is = c['shared_expert_intermediate_size']
            W[m + 'shared_expert.gate_proj.weight'] = n(Is, D, std=D ** -0.5)
            W[m + 'shared_expert.up_proj.weight'] = n(Is, D, std=D ** -0.5)
            W[m + 'shared_expert.down_proj.weight'] = n(D, Is, std=Is ** -0.5)
            W[m + 'shared_expert_gate.weight'] = n(1, D, std=D ** -0.5)
    W['model.norm.weight'] = norm(D)
    if not c['tie_word_embeddings']:
        W['lm_head.weight'] = n(V, D, std=D ** -0.5)
    return W




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--families', default=','.join(CONFIGS))
    args = ap.parse_args()
    for fi, family in enumerate(args.families.split(',')):
        c = CONFIGS[family]
        model_type = c['model_type']  # the fixture's family (mixtral_swa is a Mixtral)
        # The first seed whose routing has no near-tie (gap ≥ MIN_GAP between the k-th and (k+1)-th score),
        # so that the runtime's float32 rounding cannot flip a choice.
        for seed in range(1000 + 100 * fi, 1000 + 100 * fi + 50):
            g = torch.Generator().manual_seed(seed)
            # Stored as F16 (half the bytes of the fixture); the reference computes in float32 on the same
            # F16-representable values, so the checkpoint is exact.
            raw = make_gptoss_weights(c, g) if family == 'gpt_oss' else make_weights(model_type, c, g)
            W = {k: (v if v.dtype == torch.uint8 else v.half().float()) for k, v in raw.items()}
            tokens = torch.randint(0, c['vocab_size'], (SEQ_LEN,), generator=g)
            model = GptOss(c, W) if family == 'gpt_oss' else Model(model_type, c, W)
            with torch.no_grad():
                logits = model.forward(tokens)
            if model.min_gap >= MIN_GAP:
                break
        out = os.path.join(args.out, family)
        os.makedirs(out, exist_ok=True)
        save_safetensors(os.path.join(out, 'model.safetensors'), {k: v.contiguous().numpy() if v.dtype == torch.uint8 else v.contiguous().numpy().astype(np.float16) for k, v in W.items()}, metadata={'format': 'pt'})
        with open(os.path.join(out, 'config.json'), 'w') as fh:
            json.dump(c, fh, indent=2)
        logits.numpy().astype('<f4').tofile(os.path.join(out, 'logits.f32.bin'))
        with open(os.path.join(out, 'routing.json'), 'w') as fh:
            json.dump({str(k): v for k, v in model.routing.items()}, fh)
        ref = {
            'family': family, 'model_type': c['model_type'], 'tokens': tokens.tolist(), 'seq_len': SEQ_LEN,
            'prefill_split': PREFILL_SPLIT, 'vocab_size': c['vocab_size'], 'torch_version': torch.__version__,
            'compute_dtype': 'float32 (CPU)', 'logits': 'logits.f32.bin: [seq_len, vocab] float32 little-endian, one forward over the whole sequence',
            'routing': 'routing.json: MoE layer → per token the chosen experts, in torch.topk order (descending score)',
            'seed': seed, 'greedy_next': int(logits[-1].argmax()),
            'min_routing_gap': model.min_gap,
            **({'clamped_preactivations': model.clamped} if family == 'gpt_oss' else {}),
        }
        with open(os.path.join(out, 'reference.json'), 'w') as fh:
            json.dump(ref, fh, indent=1)
        print(f'{family}: {sum(v.numel() for v in W.values())} parameters, logits |max| {logits.abs().max():.3f}, smallest routing gap {model.min_gap:.2e}')


if __name__ == '__main__':
    main()
