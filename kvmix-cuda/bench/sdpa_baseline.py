#!/usr/bin/env python3
"""fp16 decode attention baseline for DeviceBench: torch scaled_dot_product_attention on the GPU.

For each shape of DeviceBench (one query token per sequence over a context of T tokens, head dim 128)
prints {shape: {median_ms, bytes_read, ...}} as JSON. Times are medians of CUDA-event samples, each
timing CALLS back-to-back calls after a warm-up, like DeviceBench.
Usage: python3 sdpa_baseline.py [--samples N] > sdpa.json
"""
import argparse
import json

import torch
import torch.nn.functional as F

SHAPES = [
    ("batch8_ctx4096", 8, 4096, 32, 32),
    ("batch1_ctx32768", 1, 32768, 32, 32),
    ("batch8_ctx4096_gqa8", 8, 4096, 32, 8),
]
HEAD_DIM = 128
CALLS = 20


def measure(batch, tokens, q_heads, kv_heads, samples):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, q_heads, 1, HEAD_DIM, device="cuda", dtype=torch.float16, generator=gen)
    k = torch.randn(batch, kv_heads, tokens, HEAD_DIM, device="cuda", dtype=torch.float16, generator=gen)
    v = torch.randn(batch, kv_heads, tokens, HEAD_DIM, device="cuda", dtype=torch.float16, generator=gen)
    gqa = q_heads != kv_heads

    def call():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)

    for _ in range(10):
        call()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(samples):
        start.record()
        for _ in range(CALLS):
            call()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / CALLS)
    times.sort()
    median = times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
    bytes_read = (k.numel() + v.numel() + 2 * q.numel()) * 2
    return {
        "median_ms": median,
        "bytes_read": bytes_read,
        "bytes_read_per_s": bytes_read / (median / 1e3),
        "torch": torch.__version__,
        "backend_note": "torch.nn.functional.scaled_dot_product_attention, fp16, default backend selection",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    result = {name: measure(b, t, hq, hkv, args.samples) for name, b, t, hq, hkv in SHAPES}
    result["device"] = torch.cuda.get_device_name(0)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
