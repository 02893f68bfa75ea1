"""The bench's result as a plain-text table (what ``valueprobe bench`` prints without --json)."""

from __future__ import annotations

from typing import Any


def format_table(result: dict[str, Any]) -> str:
    """One line per strategy, the targets, and the HF comparison when it ran."""
    m = result["machine"]
    lines = [f"model {result['model']}; {result['prompts']} prompts; minimum "
             f"{result['min_tokens']} tokens; {m['cpu']} ({m['cores']} cores), load "
             f"{result.get('load_average_start')} -> {result.get('load_average_end')}; "
             f"matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s (jax f32)"]
    head = (f"{'strategy':<13}{'tokens':>8}{'x min':>7}{'GFLOP':>8}{'XLA GF':>8}{'ms/prompt':>10}"
            f"{'speedup':>8}{'tok ratio':>10}{'GF/s':>7}{'RSS MB':>8}{'XLA MB':>8}{'compiles':>9}")
    lines += [head, "-" * len(head)]
    for s, r in result["strategies"].items():
        xla = r.get("flops_xla")
        xmb = r.get("xla_peak_mb")
        lines.append(
            f"{s:<13}{r['tokens_processed']:>8}{r['tokens_vs_min']:>7.2f}"
            f"{r['flops_model'] / 1e9:>8.0f}{(xla or float('nan')) / 1e9:>8.0f}"
            f"{1e3 * r['s_per_prompt']:>10.1f}{r.get('time_speedup_vs_naive', float('nan')):>8.2f}"
            f"{r.get('token_ratio_vs_naive', float('nan')):>10.2f}{r['gflops_per_s']:>7.1f}"
            f"{r['rss_peak_mb']:>8.0f}{(xmb or float('nan')):>8.0f}{r['compiles']:>9}")
    for s, t in result.get("targets", {}).items():
        lines.append(f"target {s}: tokens {t['tokens_vs_min']:.2f} x min (<= 1.2: "
                     f"{'yes' if t['tokens_ok'] else 'NO'}); speedup {t['speedup']:.2f} vs "
                     f"required {t['required_speedup']:.2f} ({'yes' if t['speed_ok'] else 'NO'})")
    lines += _peer_rows(result)
    hf = result.get("hf")
    if hf:
        sc = hf["scoring"]
        lines.append(f"HF-PyTorch reference (torch {hf['torch']}, {hf['torch_threads']} threads, "
                     f"matmul peak {hf['matmul_peak_gflops_torch']:.1f} GFLOP/s):")
        lines.append(f"  scoring {1e3 * sc['s_per_prompt']:.1f} ms/prompt, "
                     f"{sc['gflops_per_s']:.1f} GFLOP/s ({100 * sc['peak_fraction']:.0f}% of peak); "
                     + ", ".join(f"{s} {v:.2f}x faster" for s, v in sc["speedup"].items()))
        for s, d in sc["diff_vs_ours"].items():
            lines.append(f"  max |ours({s}) - HF|: token logits {d['token_logits']:.2e}, option "
                         f"log-lik {d['option_logprob']:.2e} ({d['option_logprob_per_token']:.2e}"
                         " per token)")
        for s in sc["speedup"]:
            r = result["strategies"][s]
            lines.append(f"  ours {s}: {r['gflops_per_s']:.1f} GFLOP/s "
                         f"({100 * r['peak_fraction']:.0f}% of the jax matmul peak)")
        g = hf.get("generation")
        if g:
            lines.append(f"  generation ({g['prompts']} prompts x {g['samples']} x "
                         f"{g['max_new_tokens']}): HF {g['hf_s_per_prompt']:.2f} s/prompt "
                         f"({g['hf_tokens_per_s']:.0f} tok/s), ours {g['ours_s_per_prompt']:.2f} "
                         f"s/prompt ({g['ours_tokens_per_s']:.0f} tok/s): {g['speedup']:.2f}x per "
                         f"prompt, {g['speedup_per_token']:.2f}x per token; useful GFLOP/s HF "
                         f"{g['hf_useful_gflops_per_s']:.1f}, ours {g['ours_useful_gflops_per_s']:.1f}")
            st = g.get("ours_sampler")
            if st:
                lines.append(f"  ours: {st['decode_calls']} decode loop(s) on {st['decode_rows']} "
                             f"rows, {st['decode_steps']} steps, {st['row_steps']} tokens fed "
                             f"for {st['tokens']} generated; {st['prefill_calls']} prefill calls")
    lm = result.get("lmeval")
    if lm:
        lines.append(f"lm-eval HF backend (lm_eval {lm['lm_eval']}, torch {lm['torch']}, "
                     f"{lm['torch_threads']} threads, {lm['tokens']} tokens through the model): "
                     + ", ".join(f"batch {r['batch_size']} {1e3 * r['s_per_prompt']:.1f}"
                                 for r in lm["runs"])
                     + f" ms/prompt; best batch {lm['best_batch_size']}")
        for r in lm["runs"]:
            for s, d in r["diff_vs_ours"].items():
                lines.append(f"  batch {r['batch_size']}: max |ours({s}) - lm-eval| option "
                             f"log-lik {d['option_logprob']:.2e} "
                             f"({d['option_logprob_per_token']:.2e} per token)")
    return "\n".join(lines)


def _peer_rows(result: dict[str, Any]) -> list[str]:
    """Scoring time per prompt of ours beside the PyTorch peers that ran, with our speedup over
    each and the largest option log-likelihood difference from ours."""
    hf, lm = result.get("hf"), result.get("lmeval")
    if not (hf or lm):
        return []
    ours = hf["scoring"]["speedup"] if hf else lm["speedup"]  # keyed by our strategies
    head = f"{'scoring, same prompts':<44}{'ms/prompt':>10}  {'ours faster':<30}{'max |d loglik|':>14}"
    rows = ["", head, "-" * len(head)]
    for s in ours:
        rows.append(f"{'ours, ' + s:<44}{1e3 * result['strategies'][s]['s_per_prompt']:>10.1f}")
    peers = []
    if hf:
        sc = hf["scoring"]
        peers.append(("the paper's procedure (HF batch 1)", sc["s_per_prompt"], sc["speedup"],
                      max(d["option_logprob"] for d in sc["diff_vs_ours"].values())))
    if lm:
        peers.append((f"lm-eval {lm['lm_eval']} HFLM (batch {lm['best_batch_size']}, its best)",
                      lm["s_per_prompt"], lm["speedup"], lm["max_diff_option_logprob"]))
    for name, spp, speedup, diff in peers:
        fast = ", ".join(f"{s} {v:.2f}x" for s, v in speedup.items())
        rows.append(f"{name:<44}{1e3 * spp:>10.1f}  {fast:<30}{diff:>14.1e}")
    return rows + [""]


__all__ = ["format_table"]
