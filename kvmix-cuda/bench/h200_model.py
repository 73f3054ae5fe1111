#!/usr/bin/env python3
"""The model of the H200 on the H100 (README, "A model of the H200 on the H100") as markdown tables.

Usage: h200_model.py MODEL_JSON [SCALAR_MODEL_JSON]
  MODEL_JSON         DeviceBench --occupy-sms 33 --scale 0.75 on an H100 (default results-h100-model-h200.json)
  SCALAR_MODEL_JSON  the same for the scalar kernels (3b9d96d), checked against their H200 run
                     (results-h200-scalar.json; default results-h100-model-h200-scalar.json)
Each estimate is the model's time at the split an H200 chooses for the whole shape (as an H100 does: same
multiprocessors and occupancy; results-h100.json), set against SDPA and the copy bandwidth measured on the H200
(the scalar kernels' run). Then the model against the H200 runs: MODEL_JSON's kernels (results-h200.json) and the
scalar kernels (results-h200-scalar.json), at every split from 512 tokens.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def load(name):
    return json.loads((HERE / name if not Path(name).exists() else Path(name)).read_text())


def by_shape(result):
    return {s["shape"]: s for s in result["shapes"]}


def main():
    model = load(sys.argv[1] if len(sys.argv) > 1 else "results-h100-model-h200.json")
    scalar_model = load(sys.argv[2] if len(sys.argv) > 2 else "results-h100-model-h200-scalar.json")
    h200 = by_shape(load("results-h200-scalar.json"))
    whole = by_shape(load("results-h100.json"))
    copy = load("results-h200-scalar.json")["copy"]["bytes_read_plus_written_per_s"]
    print("| shape (as run in the model) | bits | split | model time | H200 SDPA | speed-up | bytes read / time | of H200 copy bandwidth |")
    print("|---|---|---|---|---|---|---|---|")
    for s in model["shapes"]:
        full = whole[s["shape"]]
        sdpa = h200[s["shape"]]["sdpa_fp16"]["median_ms"]
        for w, wf in zip(s["fused_attention"], full["fused_attention"]):
            split = str(wf["split_tokens"])
            ms = w["median_ms_by_split_tokens"][split]
            rate = wf["bytes_read"] / (ms / 1e3)
            print(f"| {s['shape']} ({s['batch']} x {s['kv_heads']} heads) | {w['bits']} | {split} | {ms * 1e3:.1f} us "
                  f"| {sdpa * 1e3:.1f} us | {sdpa / ms:.2f}x | {rate / 1e12:.2f} TB/s | {100 * rate / copy:.0f}% |")
    print_check("these kernels (results-h200.json)", model, by_shape(load("results-h200.json")))
    print_check("scalar kernels (3b9d96d)", scalar_model, h200)


def print_check(title, model, measured):
    """The model's time against the H200's at each split of 512 tokens or more."""
    print()
    print(f"| {title} | bits | split | model time | H200 measured | H200 / model |")
    print("|---|---|---|---|---|---|")
    for s in model["shapes"]:
        for w, wh in zip(s["fused_attention"], measured[s["shape"]]["fused_attention"]):
            for split, ms in w["median_ms_by_split_tokens"].items():
                if int(split) < 512:
                    continue
                real = wh["median_ms_by_split_tokens"][split]
                print(f"| {s['shape']} | {w['bits']} | {split} | {ms * 1e3:.1f} us | {real * 1e3:.1f} us | {real / ms:.3f} |")


if __name__ == "__main__":
    main()
