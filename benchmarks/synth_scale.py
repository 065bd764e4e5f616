"""Time `drfuse synth` at demo scale and at a MIMIC-like scale; print a table, write JSON.

Each scale runs in a fresh subprocess (so its peak memory is its own) into a temporary folder that
is removed afterwards. At MIMIC scale images are skipped (`images: false`): 10 k+ JPEGs would
measure the disk, and the image stage reads real MIMIC-CXR files at that scale anyway.

    .venv/bin/python benchmarks/synth_scale.py                      # demo + MIMIC-like (43.5 k subjects)
    .venv/bin/python benchmarks/synth_scale.py --scales mimic --mimic-subjects 20000

Real MIMIC-IV v2.2 for comparison: 73,181 ICU stays, 313.6 M chartevents rows (all items); the
cohort's 17 variables are a fraction of those rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from drfuse.synth.settings import from_config_yaml

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
from pathlib import Path
from drfuse.synth import generate
settings = json.loads(sys.argv[2])
start = time.perf_counter()
generate(Path(sys.argv[1]), settings)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def count_rows(path: Path) -> int:
    """Data rows of a .csv.gz (no embedded newlines in these files)."""
    lines = 0
    with gzip.open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            lines += block.count(b"\n")
    return lines - 1


def run(name: str, settings: dict, workdir: Path) -> dict:
    out = workdir / name
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), json.dumps(settings)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    result = {"scale": name, **settings, **json.loads(proc.stdout.strip().splitlines()[-1])}
    iv = out / "mimic-iv"
    for key, rel in [
        ("stays", "icu/icustays.csv.gz"),
        ("chartevents", "icu/chartevents.csv.gz"),
        ("labevents", "hosp/labevents.csv.gz"),
    ]:
        result[f"{key}_rows"] = count_rows(iv / rel)
    result["images"] = sum(1 for _ in (out / "mimic-cxr-jpg").rglob("*.jpg"))
    result["chartevents_mb"] = (iv / "icu/chartevents.csv.gz").stat().st_size / 2**20
    result["total_mb"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    result["event_rows_per_s"] = (result["chartevents_rows"] + result["labevents_rows"]) / result["seconds"]
    shutil.rmtree(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="demo,mimic")
    parser.add_argument("--mimic-subjects", type=int, default=43_500, help="~60 k ICU stays")
    parser.add_argument("--gzip-level", type=int, help="default: config.yaml's synth.gzip_level")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "synth_scale.json")
    args = parser.parse_args()
    changes = {} if args.gzip_level is None else {"gzip_level": args.gzip_level}
    scales = {
        "demo": from_config_yaml(**changes),  # config.yaml's synth section as it is
        "mimic": from_config_yaml(n_subjects=args.mimic_subjects, images=False, **changes),
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="synth_bench_") as tmp:
        for name in args.scales.split(","):
            results.append(run(name, scales[name], Path(tmp)))
    cols = [
        "scale",
        "n_subjects",
        "stays_rows",
        "chartevents_rows",
        "labevents_rows",
        "images",
        "seconds",
        "event_rows_per_s",
        "max_rss_mb",
        "total_mb",
    ]
    print(" | ".join(cols))
    for r in results:
        print(
            " | ".join(
                f"{r[c]:,.1f}" if isinstance(r[c], float) else f"{r[c]:,}" if isinstance(r[c], int) else str(r[c])
                for c in cols
            )
        )
    for r in results:
        if r["scale"] == "mimic":
            # Linear in stays: what 73,181 stays (all of MIMIC-IV v2.2) would take here.
            print(f"extrapolated to 73,181 stays: {r['seconds'] * 73_181 / r['stays_rows']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine_cores": __import__("os").cpu_count(), "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
