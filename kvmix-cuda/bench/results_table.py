#!/usr/bin/env python3
"""Prints the README's markdown tables from a DeviceBench JSON (default bench/results-h100.json)."""
import json
import sys
from pathlib import Path


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results-h100.json")
    r = json.loads(path.read_text())
    copy = r["copy"]["bytes_read_plus_written_per_s"]
    print(f"Device: {r['device']['name']} ({r['device']['multiprocessors']} SMs, PTX {r['device']['ptx']}); "
          f"device-to-device copy {copy / 1e12:.2f} TB/s (bytes read + written) in the same run.\n")
    print("| shape | bits | fused attention | fp16 SDPA | speed-up | bytes read | of copy bandwidth | split | GPU = CPU codes | rel. error vs CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in r["shapes"]:
        sdpa = s["sdpa_fp16"]["median_ms"] * 1e3
        for w in s["fused_attention"]:
            check = w.get("check_vs_cpu")
            same = (f"{check['packed_matrices_compared'] - check['packed_matrices_differing']}/"
                    f"{check['packed_matrices_compared']}") if check else "-"
            err = f"{check['attention_relative_error_seq0']:.1e}" if check else "-"
            print(f"| {s['shape']} | {w['bits']} | {w['median_ms'] * 1e3:.1f} us | {sdpa:.1f} us | "
                  f"{w['speedup_vs_sdpa']:.2f}x | {w['bytes_read'] / 1e6:.1f} MB | "
                  f"{100 * w['fraction_of_copy_bandwidth']:.0f}% | {w['split_tokens']} | {same} | {err} |")
    print()
    print("| shape | bits | prefill 4096 append (K+V) | bytes moved / time | of copy bandwidth | decode-token append |")
    print("|---|---|---|---|---|---|")
    for s in r["shapes"]:
        for w in s["fused_attention"]:
            a = w.get("append")
            if not a:
                continue
            p = a["prefill_4096"]
            print(f"| {s['shape']} | {w['bits']} | {p['median_ms']:.3f} ms | "
                  f"{p['bytes_read_plus_written_per_s'] / 1e12:.2f} TB/s | {100 * p['fraction_of_copy_bandwidth']:.0f}% | "
                  f"{a['decode_token']['median_ms'] * 1e3:.1f} us |")


if __name__ == "__main__":
    main()
