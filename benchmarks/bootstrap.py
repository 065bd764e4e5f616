"""Bootstrap benchmark: our exact vectorised AP + AUROC against a scikit-learn loop, in one run.

12,000 test stays x 25 labels (prevalences of the paper's Table 3), probabilities as float32 (so
ties occur as in real prediction files), 1,000 resamples. Ours runs all 1,000 resamples; the
scikit-learn loop (average_precision_score + roc_auc_score with sample_weight = resample counts,
per resample per label) runs the first `--sklearn-resamples` of the same resamples and its time
is extrapolated linearly to 1,000. Both must agree to 1e-9 on the overlap.

    python benchmarks/bootstrap.py [--n 12000] [--resamples 1000] [--sklearn-resamples 50]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from drfuse.evaluate.bootstrap import bootstrap_arrays, resample_counts
from drfuse.evaluate.tables import paper_table

OUT = Path(__file__).resolve().parent / "out" / "bootstrap.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12_000)
    ap.add_argument("--resamples", type=int, default=1_000)
    ap.add_argument("--sklearn-resamples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    prevalence = paper_table(3)["prevalence"].to_numpy()
    n, n_labels = args.n, len(prevalence)
    stay_id = 30_000_000 + rng.choice(10 * n, size=n, replace=False)
    y = (rng.random((n, n_labels)) < prevalence).astype(np.int8)
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, n_labels)) + 1.2 * y - 1.5)))
    p = p.astype(np.float32).astype(np.float64)

    t0 = time.perf_counter()
    ours = bootstrap_arrays(stay_id, y, p, args.resamples, args.seed)
    t_ours = time.perf_counter() - t0

    k = args.sklearn_resamples
    counts = resample_counts(stay_id, args.seed, 0, k)
    ref = {"prauc": np.full((k, n_labels), np.nan), "auroc": np.full((k, n_labels), np.nan)}
    t_ap = t_roc = 0.0
    for r in range(k):
        for j in range(n_labels):
            t1 = time.perf_counter()
            ref["prauc"][r, j] = average_precision_score(y[:, j], p[:, j], sample_weight=counts[r])
            t2 = time.perf_counter()
            ref["auroc"][r, j] = roc_auc_score(y[:, j], p[:, j], sample_weight=counts[r])
            t_roc += time.perf_counter() - t2
            t_ap += t2 - t1
    scale = args.resamples / k
    diff = {m: float(np.nanmax(np.abs(ours[f"boot_{m}"][:k] - ref[m]))) for m in ("prauc", "auroc")}
    t_sk = (t_ap + t_roc) * scale

    result = {
        "n_stays": n,
        "n_labels": n_labels,
        "n_resamples": args.resamples,
        "sklearn_resamples_timed": k,
        "ours_s": round(t_ours, 3),
        "sklearn_ap_s_extrapolated": round(t_ap * scale, 2),
        "sklearn_auroc_s_extrapolated": round(t_roc * scale, 2),
        "sklearn_total_s_extrapolated": round(t_sk, 2),
        "speedup": round(t_sk / t_ours, 1),
        "max_abs_diff_prauc": diff["prauc"],
        "max_abs_diff_auroc": diff["auroc"],
        "agree_1e-9": bool(max(diff.values()) <= 1e-9),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}, numpy {np.__version__}",
    }
    table = pd.DataFrame(
        [
            ["ours (exact, vectorised): AP + AUROC", t_ours, args.resamples],
            [f"scikit-learn loop: AP (x{scale:g} from {k})", t_ap * scale, k],
            [f"scikit-learn loop: AUROC (x{scale:g} from {k})", t_roc * scale, k],
            ["scikit-learn loop: total", t_sk, k],
        ],
        columns=["method", f"seconds for {args.resamples} resamples", "resamples run"],
    )
    print(table.to_string(index=False, float_format="%.2f"))
    print(f"speed-up {result['speedup']}x; max |ours - sklearn|: AP {diff['prauc']:.2e}, AUROC {diff['auroc']:.2e}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    if not result["agree_1e-9"]:
        raise SystemExit("results differ from scikit-learn by more than 1e-9")


if __name__ == "__main__":
    main()
