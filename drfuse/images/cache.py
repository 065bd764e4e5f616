"""The `images` stage: decode the cohort's chest X-rays once into one uint8 cache.

`build_cache` reads `cohort/stays.parquet`, takes the distinct `dicom_id`s of the stays with
`has_cxr`, and decodes only those files (JPEG, PNG or DICOM; see `drfuse.images.decode`) over a
process pool, in dicom_id order. It writes, atomically (temp names renamed at the end, nothing left
behind on failure):

- `cxr.u8`: raw uint8 memmap, shape (n_images, S, S), S = `images.cache_size`;
- `index.parquet`: `dicom_id, row, source_path` (path relative to the CXR root; `.dcm`/`.png` when
  the `.jpg` was missing and that file was read instead), readable images only, sorted by dicom_id;
- `bad_images.csv`: `dicom_id, path, reason` for missing, truncated or unreadable files
  (with `strict`, the first such file raises `UserError` instead). When more than
  `max_missing_share` of the cohort's images are bad (an incomplete MIMIC-CXR-JPG download), the
  stage fails naming how many and the first few paths, and writes nothing. So does a split (train,
  val, test) without a stay with a (readable) image: the matched dataset needs every split.

A killed run leaves its temporary folder (`drfuse.atomic`): the next run removes it when its process
is gone. Decoding workers watch their parent and exit when it dies (drfuse.workers).

Reading it (training, tables)::

    from drfuse.images.cache import ImageCache, usable_cxr

    cache = ImageCache(results / "images")
    rows = cache.rows_for(stays["dicom_id"])    # int64 row per id, -1 when not in the cache
    img = cache.array[rows[i]]                  # (S, S) uint8 view into the read-only memmap
    mask = usable_cxr(stays, results / "images")  # has_cxr & image readable: the matched dataset
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from drfuse import atomic
from drfuse.errors import UserError
from drfuse.images.decode import decode_task
from drfuse.workers import ordered_map, worker_count

log = logging.getLogger(__name__)

DATA_FILE = "cxr.u8"
INDEX_FILE = "index.parquet"
BAD_FILE = "bad_images.csv"
# Parquet schema metadata key holding S, so a reader needs nothing but the folder.
SIZE_KEY = b"drfuse.cache_size"
# Bad images named in the error when too many are missing.
SHOW_BAD = 5
_STAYS_COLUMNS = ("has_cxr", "dicom_id", "cxr_path")


def _read_tasks(stays_path: Path) -> list[tuple[str, str | None]]:
    """Distinct (dicom_id, cxr_path) of the stays with has_cxr, sorted by dicom_id."""
    if not stays_path.is_file():
        raise UserError(f"stays table not found: {stays_path}")
    missing = [c for c in _STAYS_COLUMNS if c not in pl.read_parquet_schema(stays_path)]
    if missing:
        raise UserError(f"{stays_path} lacks column(s) {', '.join(missing)}")
    stays = pl.read_parquet(stays_path, columns=list(_STAYS_COLUMNS))
    wanted = stays.filter(pl.col("has_cxr").fill_null(False))
    if wanted["dicom_id"].null_count():
        raise UserError(f"{stays_path}: {wanted['dicom_id'].null_count()} stay(s) with has_cxr but no dicom_id")
    # The same image can match two stays of one subject: decode it once.
    wanted = wanted.select("dicom_id", "cxr_path").unique("dicom_id", keep="first").sort("dicom_id")
    return list(wanted.iter_rows())


def _check_matched_splits(stays_path: Path, readable: set[str] | None = None) -> None:
    """Every split of the matched dataset holds a stay: with `has_cxr` (before decoding), and with a
    readable image (`readable`: the dicom_ids decoded). Else every run on the matched set fails
    late. Skipped for a stays table without splits (made by hand, not by the cohort stage)."""
    if "split" not in pl.read_parquet_schema(stays_path):
        return
    stays = pl.read_parquet(stays_path, columns=["split", "has_cxr", "dicom_id"]).filter(
        pl.col("has_cxr").fill_null(False)
    )
    if readable is not None:
        stays = stays.filter(pl.col("dicom_id").is_in(list(readable)))
    counts = {name: stays.filter(pl.col("split") == name).height for name in ("train", "val", "test")}
    empty = [name for name, n in counts.items() if not n]
    if not empty:
        return
    what, remedy = (
        ("a chest X-ray matched", "more subjects with a CXR, or other split.fractions / split.seed")
        if readable is None
        else ("a readable chest X-ray", "complete the MIMIC-CXR-JPG download (cohort/cxr_files.txt lists the files)")
    )
    per_split = ", ".join(f"{name} {n}" for name, n in counts.items())
    raise UserError(
        f"images: no stay of the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} has {what} ({per_split} "
        f"stays of {stays_path}): the matched dataset needs some in every split; {remedy}"
    )


def _write_index(path: Path, ids: list[str], sources: list[str], size: int) -> None:
    table = pa.table(
        {
            "dicom_id": pa.array(ids, pa.string()),
            "row": pa.array(np.arange(len(ids), dtype=np.int64)),
            "source_path": pa.array(sources, pa.string()),
        }
    )
    pq.write_table(table.replace_schema_metadata({SIZE_KEY: str(size).encode()}), path)


def _check_missing_share(bad: list[tuple[str, str, str]], n_tasks: int, cxr_root: Path, max_share: float) -> None:
    if not n_tasks or len(bad) / n_tasks <= max_share:
        return
    for dicom_id, source, reason in bad:
        log.warning("bad image %s (%s): %s", source or "(no cxr_path)", dicom_id, reason)
    shown = "; ".join(f"{cxr_root / s if s else '(no cxr_path)'} ({r})" for _, s, r in bad[:SHOW_BAD])
    raise UserError(
        f"images: {len(bad):,} of the cohort's {n_tasks:,} chest X-rays ({len(bad) / n_tasks:.1%}) are missing or "
        f"unreadable, more than images.max_missing_share = {max_share:g}; first: {shown}. Complete the "
        "MIMIC-CXR-JPG download (cohort/cxr_files.txt lists the files the cohort needs) or raise the setting"
    )


def build_cache(
    stays_path: Path,
    cxr_root: Path,
    out_dir: Path,
    size: int,
    strict: bool,
    workers: int,
    max_missing_share: float = 1.0,
) -> None:
    """Decode every has_cxr stay's image once into out_dir/{cxr.u8, index.parquet, bad_images.csv}.

    `workers`: decoding processes (0 = all cores); `max_missing_share`: the largest share of bad
    images accepted (1.0 = any)."""
    if not isinstance(size, int) or size < 1:
        raise UserError(f"images.cache_size must be a positive integer, got {size!r}")
    stays_path, cxr_root, out_dir = Path(stays_path), Path(cxr_root), Path(out_dir)
    wanted = _read_tasks(stays_path)
    _check_matched_splits(stays_path)  # at once, before an hour of decoding
    if wanted and not cxr_root.is_dir():
        raise UserError(f"CXR image root not found: {cxr_root} (data.mimic_cxr_dir)")
    tasks = [(dicom_id, rel, str(cxr_root), size) for dicom_id, rel in wanted]
    n_workers = worker_count(workers, len(tasks), "images: --threads")
    ids: list[str] = []
    sources: list[str] = []
    bad: list[tuple[str, str, str]] = []
    with atomic.writing_files(out_dir, (DATA_FILE, INDEX_FILE, BAD_FILE)) as tmp:
        with ExitStack() as stack:
            data = stack.enter_context(open(tmp / DATA_FILE, "wb"))
            results = stack.enter_context(closing(ordered_map(decode_task, tasks, n_workers)))
            for dicom_id, source, arr, reason in tqdm(results, total=len(tasks), desc="CXR cache", unit="img"):
                if reason is not None:
                    if strict:
                        where = cxr_root / source if source else "(no cxr_path)"
                        raise UserError(f"unreadable chest X-ray {where} (dicom_id {dicom_id}): {reason}")
                    bad.append((dicom_id, source, reason))
                    continue
                # Results arrive in dicom_id order, so appending gives compact, deterministic rows.
                data.write(np.ascontiguousarray(arr))  # buffer protocol: no bytes copy
                ids.append(dicom_id)
                sources.append(source)
        _check_missing_share(bad, len(tasks), cxr_root, max_missing_share)
        _check_matched_splits(stays_path, set(ids))
        _write_index(tmp / INDEX_FILE, ids, sources, size)
        pl.DataFrame(
            {"dicom_id": [b[0] for b in bad], "path": [b[1] for b in bad], "reason": [b[2] for b in bad]},
            schema={"dicom_id": pl.String, "path": pl.String, "reason": pl.String},
        ).write_csv(tmp / BAD_FILE)
    log.info("CXR cache: %d images of %d px in %s", len(ids), size, out_dir)
    if bad:
        # Those stays count as without CXR downstream (usable_cxr); the count belongs in the report.
        log.warning("%d of %d chest X-rays unreadable or missing: see %s", len(bad), len(tasks), out_dir / BAD_FILE)


class ImageCache:
    """Read-only view of an `images/` folder written by `build_cache`.

    `array`: np.memmap (n_images, S, S) uint8; `size`: S; `dicom_ids`: ids in row order;
    `rows_for(ids)`: the row of each id, -1 where the id is null or not in the cache.
    """

    def __init__(self, cache_dir: Path):
        cache_dir = Path(cache_dir)
        index_path, data_path = cache_dir / INDEX_FILE, cache_dir / DATA_FILE
        for path in (index_path, data_path):
            if not path.is_file():
                raise UserError(f"image cache file not found: {path} (run `drfuse images`)")
        index = pq.read_table(index_path)
        meta = index.schema.metadata or {}
        if SIZE_KEY not in meta:
            raise UserError(f"{index_path} has no cache size metadata: not written by `drfuse images`")
        self.size = int(meta[SIZE_KEY])
        self.dicom_ids: list[str] = index.column("dicom_id").to_pylist()
        n = len(self.dicom_ids)
        expected = n * self.size * self.size
        if data_path.stat().st_size != expected:
            raise UserError(
                f"{data_path} holds {data_path.stat().st_size} bytes, its index expects {expected}: rebuild the cache"
            )
        shape = (n, self.size, self.size)
        # np.memmap cannot map an empty file.
        self.array = np.memmap(data_path, np.uint8, "r", shape=shape) if n else np.zeros(shape, np.uint8)
        self._row = {d: i for d, i in zip(self.dicom_ids, index.column("row").to_pylist())}

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def rows_for(self, dicom_ids: Iterable[str | None]) -> np.ndarray:
        return np.fromiter((self._row.get(d, -1) for d in dicom_ids), dtype=np.int64)


def usable_cxr(stays, cache_dir: Path) -> np.ndarray:
    """Bool per stay (polars or pandas frame): has_cxr and its image is readable (in the cache)."""
    # Nulls (None, NaN, pd.NA) count as no CXR.
    has = np.array([isinstance(h, (bool, np.bool_)) and bool(h) for h in stays["has_cxr"]], dtype=bool)
    return has & (ImageCache(cache_dir).rows_for(list(stays["dicom_id"])) >= 0)
