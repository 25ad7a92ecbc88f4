#!/usr/bin/env python3
"""Parity fixtures for relative-position attention (XLNet, T5) against Hugging Face transformers.

Builds HF's XLNetRelativeAttention and T5Attention from small configs with random weights (the hub
is never contacted) and writes, under the output directory (default tests/fixtures/attention,
relative to the repository root):

  <case>_f64.safetensors, <case>_f32.safetensors   one file per case and dtype:
      metadata      the config (sizes, attn_type, ...), all values as strings
      weights/...   the module's state_dict under HF's names (T5: weights/0/..., weights/1/... per layer)
      inputs/...    what the module is given, batch first as txtcls lays it out; masks as U8
                    (nonzero = masked) and, for XLNet, the raw inputs HF builds them from
                    (input_mask, perm_mask, token_type_ids) and the masks / segment matrix /
                    positional encoding that HF's XLNetModel actually built from them
      outputs/...   the module's outputs
      grads/...     gradients of loss = sum_k sum(output_k * inputs/loss_w/k) wrt every weight
                    (grads/<name>) and every differentiable input (grads/inputs/<name>)
  t5_buckets.safetensors     T5 buckets of the relative positions -300..300 for several
                             (bidirectional, num_buckets, max_distance)
  xlnet_pos_emb.safetensors  XLNetModel.relative_positional_encoding for several
                             (qlen, klen, d_model, attn_type, bi_data, clamp_len, bsz), batch first

Layouts: HF's XLNet runs time first ([len, bsz, ...], masks [qlen, klen, bsz, 1]); everything here
is stored batch first: hidden [B, L, d], positional encoding [B, P, d], masks [B', 1, qlen, klen],
seg_mat [B, qlen, klen, 2], target_mapping [B, num_predict, qlen] (HF's user-facing layout).

Checked by tests/test_attention_relpos*.cpp.
    python3 tools/make_attention_fixtures.py [tests/fixtures/attention]
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import T5Config, XLNetConfig, XLNetModel
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.models.t5.modeling_t5 import T5Attention
from transformers.models.xlnet.modeling_xlnet import XLNetRelativeAttention

DTYPES = {"f64": torch.float64, "f32": torch.float32}


def meta(**kw):
    return {k: str(int(v) if isinstance(v, bool) else v) for k, v in kw.items()}


def randomize(module, seed, spread=0.5):
    """Weights spread enough that softmaxes are far from uniform; norms off their defaults."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = (torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1).to(p.dtype)
            if name.endswith("layer_norm.weight"):
                p.copy_(1 + 0.3 * noise)
            elif name.endswith("relative_attention_bias.weight"):
                p.copy_(2 * noise)
            else:
                p.copy_(spread * noise)


def bool_mask_bnij(m, qlen, klen):
    """HF XLNet float mask [qlen or 1, klen, bsz or 1, 1] -> U8 [B', 1, qlen, klen]."""
    m = m.expand(qlen, klen, m.shape[2], m.shape[3])
    return (m.permute(2, 3, 0, 1) > 0).to(torch.uint8).contiguous()


# ------------------------------------------------------------------------------------------- XLNet
XLNET_CASES = {
    # single stream over a memory, with segments and padding
    "xlnet_bi_mems_seg": dict(attn_type="bi", bi_data=False, clamp_len=-1, same_length=False, qlen=4, mlen=3,
                              bsz=2, two_stream=False, num_predict=0, input_mask=True, segments=True,
                              perm_mask=False, mem_len=5, reuse_len=0),
    # causal, same_length, bi_data (two directions over the batch halves), clamped distances
    "xlnet_uni_samelen_bidata": dict(attn_type="uni", bi_data=True, clamp_len=3, same_length=True, qlen=4, mlen=2,
                                     bsz=2, two_stream=False, num_predict=0, input_mask=False, segments=True,
                                     perm_mask=False, mem_len=3, reuse_len=2),
    # two-stream pretraining attention: perm_mask, target_mapping, memory, segments, padding
    "xlnet_two_stream": dict(attn_type="bi", bi_data=False, clamp_len=-1, same_length=False, qlen=4, mlen=2, bsz=2,
                             two_stream=True, num_predict=2, input_mask=True, segments=True, perm_mask=True,
                             mem_len=0, reuse_len=0),
    # two streams without target_mapping, causal, no memory (bsz 1: HF adds the data mask in place into
    # the [qlen, klen, 1, 1] causal mask, which fails for a larger batch)
    "xlnet_two_stream_uni_nomem": dict(attn_type="uni", bi_data=False, clamp_len=-1, same_length=False, qlen=3,
                                       mlen=0, bsz=1, two_stream=True, num_predict=0, input_mask=False,
                                       segments=False, perm_mask=True, mem_len=4, reuse_len=0),
}


def xlnet_case(root, name, c, tag, seed):
    dtype = DTYPES[tag]
    torch.manual_seed(seed)
    d_model, n_head = 8, 2
    cfg = XLNetConfig(vocab_size=11, d_model=d_model, n_layer=1, n_head=n_head, d_inner=16,
                      attn_type=c["attn_type"], bi_data=c["bi_data"], clamp_len=c["clamp_len"],
                      same_length=c["same_length"], mem_len=c["mem_len"], reuse_len=c["reuse_len"],
                      layer_norm_eps=1e-12, dropout=0.1)
    B, qlen, mlen = c["bsz"], c["qlen"], c["mlen"]
    klen = qlen + mlen
    M = c["num_predict"] if c["num_predict"] else qlen

    # Raw inputs from which XLNetModel builds masks, segments and positions.
    input_mask = torch.zeros(B, qlen)
    if c["input_mask"]:
        input_mask[1, -1] = 1  # the last token of batch 1 is padding
    perm_mask = None
    if c["perm_mask"]:
        perm_mask = (torch.rand(B, qlen, qlen) < 0.4).float()
    target_mapping = None
    if c["num_predict"]:
        target_mapping = torch.zeros(B, M, qlen)
        for b in range(B):
            for m, pos in enumerate(torch.randperm(qlen)[:M].tolist()):
                target_mapping[b, m, pos] = 1
    token_type_ids = torch.randint(0, 2, (B, qlen)) if c["segments"] else None

    # HF's own mask/segment/position construction: run a one-layer XLNetModel (float32: HF builds
    # the positional encoding in float32, which a float64 two-stream layer would refuse) and
    # capture what its attention layer receives.
    model = XLNetModel(cfg).float().eval()
    seen = {}

    def grab(mod, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    model.layer[0].rel_attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(inputs_embeds=torch.randn(B, qlen, d_model), token_type_ids=token_type_ids,
              input_mask=input_mask if c["input_mask"] else None, perm_mask=perm_mask,
              target_mapping=target_mapping, mems=[torch.randn(mlen, B, d_model)] if mlen else None, use_mems=True)
    _, _, hf_mask_h, hf_mask_g, hf_r, hf_seg = seen["args"]

    # The layer itself, in the target dtype, with its own random weights and inputs.
    attn = XLNetRelativeAttention(cfg).to(dtype).eval()
    randomize(attn, seed + 1)
    h = torch.randn(qlen, B, d_model, dtype=dtype, requires_grad=True)
    g = torch.randn(M, B, d_model, dtype=dtype, requires_grad=True) if c["two_stream"] else None
    mems = torch.randn(mlen, B, d_model, dtype=dtype) if mlen else None
    r = hf_r.to(dtype).detach().clone().requires_grad_(True)  # [P, B', d]
    seg_mat = hf_seg.to(dtype) if hf_seg is not None else None
    mask_h = hf_mask_h.to(dtype) if hf_mask_h is not None else None
    mask_g = hf_mask_g.to(dtype) if hf_mask_g is not None else None
    tm = target_mapping.permute(1, 2, 0).to(dtype) if target_mapping is not None else None
    out_h, out_g = attn(h, g, mask_h, mask_g, r, seg_mat, mems=mems, target_mapping=tm)[:2]
    lw_h = torch.randn_like(out_h)
    loss = (out_h * lw_h).sum()
    if out_g is not None:
        lw_g = torch.randn_like(out_g)
        loss = loss + (out_g * lw_g).sum()
    loss.backward()

    bf = lambda t: t.detach().transpose(0, 1).contiguous().clone()  # [L, B, d] -> [B, L, d]
    t = {}
    for k, p in attn.state_dict().items():
        t["weights/" + k] = p.detach().contiguous()
    t["inputs/h"] = bf(h)
    t["inputs/r"] = bf(r)
    t["inputs/loss_w/h"] = bf(lw_h)
    if g is not None:
        t["inputs/g"] = bf(g)
        t["inputs/loss_w/g"] = bf(lw_g)
    if mems is not None:
        t["inputs/mems"] = bf(mems)
    if seg_mat is not None:
        t["inputs/seg_mat"] = seg_mat.permute(2, 0, 1, 3).contiguous()
        t["inputs/token_type_ids"] = token_type_ids.contiguous()
    if mask_h is not None:
        t["inputs/attn_mask_h"] = bool_mask_bnij(hf_mask_h, qlen, klen)
        t["inputs/attn_mask_g"] = bool_mask_bnij(hf_mask_g, qlen, klen)
    if c["input_mask"]:
        t["inputs/input_mask"] = input_mask.to(torch.uint8)
    if perm_mask is not None:
        t["inputs/perm_mask"] = perm_mask.to(torch.uint8)
    if tm is not None:
        t["inputs/target_mapping"] = target_mapping.to(dtype).contiguous()
    t["hf/pos_emb"] = hf_r.detach().transpose(0, 1).contiguous()  # float32, as XLNetModel builds it
    t["outputs/h"] = bf(out_h)
    if out_g is not None:
        t["outputs/g"] = bf(out_g)
    # the next segment's memory (XLNetModel.cache_mem) from this segment's h and the memory
    t["outputs/new_mem"] = bf(model.cache_mem(h.detach(), mems))
    for k, p in attn.named_parameters():  # unused parameters (no segments: seg_embed, r_s_bias) get zeros
        t["grads/" + k] = p.grad.detach().contiguous() if p.grad is not None else torch.zeros_like(p).detach()
    t["grads/inputs/h"] = bf(h.grad)
    t["grads/inputs/r"] = bf(r.grad)
    if g is not None:
        t["grads/inputs/g"] = bf(g.grad)
    md = meta(kind="xlnet", d_model=d_model, n_head=n_head, d_head=cfg.d_head, layer_norm_eps=cfg.layer_norm_eps,
              attn_type=c["attn_type"], bi_data=c["bi_data"], clamp_len=c["clamp_len"],
              same_length=c["same_length"], qlen=qlen, mlen=mlen, bsz=B, num_predict=c["num_predict"],
              mem_len=c["mem_len"], reuse_len=c["reuse_len"])
    save_file(t, os.path.join(root, f"{name}_{tag}.safetensors"), metadata=md)


# ---------------------------------------------------------------------------------------------- T5
T5_CASES = {
    # encoder: bidirectional buckets, key padding; layer 0 owns the bias, layer 1 reuses it
    "t5_encoder": dict(is_decoder=False, cross=False, B=2, Lq=9, Ls=0, d_model=8, d_kv=3, heads=2, num_buckets=10,
                       max_distance=6, lengths=[9, 6]),
    # decoder self-attention: causal buckets and mask, right padding
    "t5_decoder": dict(is_decoder=True, cross=False, B=2, Lq=9, Ls=0, d_model=8, d_kv=3, heads=2, num_buckets=6,
                       max_distance=7, lengths=[9, 7]),
    # decoder cross-attention over encoder states with padding: no position bias of its own
    "t5_cross": dict(is_decoder=True, cross=True, B=2, Lq=4, Ls=6, d_model=8, d_kv=3, heads=2, num_buckets=6,
                     max_distance=7, lengths=[6, 3]),
}


def t5_case(root, name, c, tag, seed):
    dtype = DTYPES[tag]
    torch.manual_seed(seed)
    cfg = T5Config(d_model=c["d_model"], d_kv=c["d_kv"], num_heads=c["heads"], dropout_rate=0.1,
                   relative_attention_num_buckets=c["num_buckets"], relative_attention_max_distance=c["max_distance"],
                   is_decoder=c["is_decoder"], is_encoder_decoder=False)
    cfg._attn_implementation = "eager"
    B, Lq, Ls = c["B"], c["Lq"], c["Ls"]
    Lk = Ls if c["cross"] else Lq
    keep = torch.zeros(B, Lk, dtype=torch.long)
    for b, n in enumerate(c["lengths"]):
        keep[b, :n] = 1
    x0 = torch.randn(B, Lq, c["d_model"], dtype=dtype, requires_grad=True)
    t = {}
    if c["cross"]:
        enc = torch.randn(B, Ls, c["d_model"], dtype=dtype, requires_grad=True)
        mask = create_bidirectional_mask(config=cfg, inputs_embeds=x0.detach(), attention_mask=keep,
                                         encoder_hidden_states=enc.detach())
        layers = [T5Attention(cfg, has_relative_attention_bias=False, layer_idx=0).to(dtype).eval()]
        randomize(layers[0], seed + 1)
        out, bias = layers[0](x0, mask=mask, key_value_states=enc)[:2]
        outs, xs = [out], [x0]
    else:
        make = create_causal_mask if c["is_decoder"] else create_bidirectional_mask
        kw = dict(cache=None) if c["is_decoder"] else {}
        mask = make(config=cfg, inputs_embeds=x0.detach(), attention_mask=keep, **kw)
        layers = [T5Attention(cfg, has_relative_attention_bias=(i == 0), layer_idx=i,
                              is_causal=c["is_decoder"]).to(dtype).eval() for i in range(2)]
        for i, layer in enumerate(layers):
            randomize(layer, seed + 1 + i)
        x1 = torch.randn(B, Lq, c["d_model"], dtype=dtype, requires_grad=True)
        out0, bias = layers[0](x0, mask=mask)[:2]
        out1 = layers[1](x1, mask=mask, position_bias=bias)[0]
        outs, xs = [out0, out1], [x0, x1]
        # the bias of queries that sit after 5 cached positions (incremental decoding)
        with torch.no_grad():
            t["outputs/bias_offset5"] = layers[0].compute_bias(3, 8, past_seen_tokens=5).contiguous()
    loss = 0
    for i, out in enumerate(outs):
        w = torch.randn_like(out)
        t[f"inputs/loss_w/{i}"] = w
        loss = loss + (out * w).sum()
    loss.backward()
    for i, layer in enumerate(layers):
        for k, p in layer.state_dict().items():
            t[f"weights/{i}/{k}"] = p.detach().contiguous()
        for k, p in layer.named_parameters():
            t[f"grads/{i}/{k}"] = p.grad.detach().contiguous()
    for i, x in enumerate(xs):
        t[f"inputs/x{i}"] = x.detach()
        t[f"grads/inputs/x{i}"] = x.grad.detach()
        t[f"outputs/{i}"] = outs[i].detach()
    if c["cross"]:
        t["inputs/encoder"] = enc.detach()
        t["grads/inputs/encoder"] = enc.grad.detach()
    t["inputs/key_padding_mask"] = (1 - keep).to(torch.uint8)
    t["inputs/mask"] = mask.detach().contiguous()  # HF's additive mask (finfo.min where masked)
    t["outputs/position_bias"] = bias.detach().contiguous()
    md = meta(kind="t5", d_model=c["d_model"], d_kv=c["d_kv"], num_heads=c["heads"], num_buckets=c["num_buckets"],
              max_distance=c["max_distance"], is_decoder=c["is_decoder"], cross=c["cross"], layers=len(layers),
              B=B, Lq=Lq, Lk=Lk)
    save_file(t, os.path.join(root, f"{name}_{tag}.safetensors"), metadata=md)


# ------------------------------------------------------------------------------- buckets, positions
BUCKET_CONFIGS = [(True, 32, 128), (False, 32, 128), (True, 8, 5), (False, 6, 7), (True, 10, 6), (False, 64, 256),
                  (True, 128, 1000), (False, 2, 2), (True, 5, 10), (True, 16, 20), (False, 20, 9)]


def buckets(root):
    rel = torch.arange(-300, 301)
    t = {"relative_position": rel.to(torch.int16)}
    md = {}
    for i, (bidirectional, nb, md_) in enumerate(BUCKET_CONFIGS):
        b = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md_)
        t[f"buckets/{i}"] = b.to(torch.int16)  # (max_distance < max_exact goes negative)
        md[f"config/{i}"] = f"{int(bidirectional)},{nb},{md_}"
    save_file(t, os.path.join(root, "t5_buckets.safetensors"), metadata=md)


POS_CASES = [  # qlen, klen, d_model, attn_type, bi_data, clamp_len, bsz (-1: None)
    (3, 3, 8, "bi", False, -1, -1),
    (4, 7, 8, "bi", False, -1, 2),
    (4, 7, 16, "uni", False, -1, -1),
    (5, 9, 8, "bi", True, -1, 4),
    (5, 9, 8, "uni", True, 3, -1),
    (6, 10, 16, "bi", False, 4, 1),
    (1, 1, 4, "uni", False, -1, -1),
    (5, 40, 64, "bi", False, -1, -1),
]


def pos_emb(root):
    t, md = {}, {}
    for i, (qlen, klen, d, attn_type, bi_data, clamp, bsz) in enumerate(POS_CASES):
        cfg = XLNetConfig(vocab_size=11, d_model=d, n_layer=1, n_head=2, d_inner=4, attn_type=attn_type,
                          bi_data=bi_data, clamp_len=clamp)
        model = XLNetModel(cfg)
        pe = model.relative_positional_encoding(qlen, klen, bsz=None if bsz < 0 else bsz)
        t[f"pos_emb/{i}"] = pe.transpose(0, 1).contiguous()
        md[f"case/{i}"] = f"{qlen},{klen},{d},{attn_type},{int(bi_data)},{clamp},{bsz}"
    save_file(t, os.path.join(root, "xlnet_pos_emb.safetensors"), metadata=md)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "attention")
    os.makedirs(root, exist_ok=True)
    for i, (name, c) in enumerate(XLNET_CASES.items()):
        for tag in DTYPES:
            xlnet_case(root, name, c, tag, seed=1000 + 10 * i)
    for i, (name, c) in enumerate(T5_CASES.items()):
        for tag in DTYPES:
            t5_case(root, name, c, tag, seed=2000 + 10 * i)
    buckets(root)
    pos_emb(root)
    print("wrote", root)


if __name__ == "__main__":
    main()
