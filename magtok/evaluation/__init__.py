"""Evaluation of a tokenizer on a folder of videos: reconstruction metrics, rFVD, codebook usage.

    from magtok.evaluation import evaluate, write_report
    result = evaluate("runs/demo", "videos/", frames=17, size=128, metrics="psnr,ssim,lpips,fvd")
    write_report(result, "eval/")       # results.json, summary.md, psnr_per_clip.png, best/worst_clip.png

See :mod:`magtok.evaluation.runner` for the clip selection rule and the metric definitions.
"""

from magtok.evaluation.report import REPORT_FILES, check_out_dir, summary_markdown, summary_table, write_report
from magtok.evaluation.runner import (CLIP_SELECTION_RULE, KNOWN_METRICS, ClipRecord, EvalResult, clip_starts,
                                      evaluate, parse_metrics)

__all__ = ["evaluate", "EvalResult", "ClipRecord", "KNOWN_METRICS", "CLIP_SELECTION_RULE", "parse_metrics",
           "clip_starts", "write_report", "check_out_dir", "summary_markdown", "summary_table", "REPORT_FILES"]
