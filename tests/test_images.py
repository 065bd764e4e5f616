"""The images stage on real chest X-rays (NIH PNGs, SIIM/NIH DICOMs, vendored in tests/data) laid out
like MIMIC-CXR-JPG.

Each cached image is checked against an independent full decode (Pillow / pydicom, centre square,
plain box resize), and the derived variants (MONOCHROME1, 12/16-bit, windowing) against the cached
original they were made from.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest
from PIL import Image

from drfuse.errors import UserError
from drfuse.images.cache import ImageCache, build_cache, usable_cxr

SIZE = 64
NIH = "nih-chestxray14/images"
DICOM_PLAIN = "dicom/nih-gcp_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
DICOM_JPEG = "dicom/siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _rel(n: int, dicom_id: str) -> str:
    subject = 10000000 + n
    return f"files/p10/p{subject}/s5{n:07d}/{dicom_id}.jpg"


# ---------------------------------------------------------------- independent reference decode


def _ref_square(arr: np.ndarray) -> np.ndarray:
    """Centre square of a float/uint8 2-D array, box-resized to SIZE: not the code under test."""
    h, w = arr.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(arr[top : top + s, left : left + s], dtype=np.float32)
    return np.asarray(Image.fromarray(crop, mode="F").resize((SIZE, SIZE), Image.Resampling.BOX))


def _ref_pil(path) -> np.ndarray:
    img = Image.open(path)
    if img.mode.startswith("I"):
        return _ref_square(np.asarray(img, dtype=np.float64) / 257.0)
    return _ref_square(np.asarray(img.convert("L"), dtype=np.float64))


def _ref_dicom(path) -> np.ndarray:
    px = pydicom.dcmread(path).pixel_array.astype(np.float64)
    return _ref_square((px - px.min()) / (px.max() - px.min()) * 255.0)


def _assert_close(cached: np.ndarray, ref: np.ndarray, what: str) -> None:
    diff = np.abs(cached.astype(np.float64) - ref).mean()
    corr = np.corrcoef(cached.ravel().astype(np.float64), ref.ravel())[0, 1]
    assert diff < 4.0 and corr > 0.98, f"{what}: mean abs diff {diff:.2f}, correlation {corr:.4f}"


# ---------------------------------------------------------------- the test tree


@pytest.fixture(scope="module")
def cxr_tree(tmp_path_factory, cxr_samples_dir):
    """A MIMIC-CXR-JPG style root with JPEGs, PNGs, DICOM variants and broken files + stays.parquet."""
    base = tmp_path_factory.mktemp("cxr")
    root = base / "mimic-cxr"
    src = cxr_samples_dir
    items = {}  # dicom_id -> (cxr_path in stays, file written, reference decode or None)

    def place(n, dicom_id, suffix):
        rel = _rel(n, dicom_id)
        path = (root / rel).with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return rel, path

    # Real PNGs re-encoded as MIMIC-CXR-JPG JPEGs (quality 95).
    for n, name in enumerate(["00000075_000", "00000129_000", "00000282_000"], start=1):
        rel, path = place(n, f"jpg{n:02d}", ".jpg")
        Image.open(src / NIH / f"{name}.png").convert("L").save(path, quality=95)
        items[f"jpg{n:02d}"] = (rel, path, _ref_pil(path))
    # MIMIC-sized (3056 x 2544, portrait) JPEG: draft decoding at reduced scale is exercised.
    rel, path = place(4, "jpgbig", ".jpg")
    big = Image.open(src / NIH / "00000284_000.png").convert("L").resize((2544, 3056), Image.Resampling.BICUBIC)
    big.save(path, quality=95)
    items["jpgbig"] = (rel, path, _ref_pil(path))
    # Non-square landscape crop: centre square must be the middle.
    rel, path = place(5, "jpgwide", ".jpg")
    Image.open(src / NIH / "00000353_000.png").convert("L").crop((0, 112, 1024, 912)).save(path, quality=95)
    items["jpgwide"] = (rel, path, _ref_pil(path))
    # PNG sources (read via the .jpg -> .png fallback): the RGBA one, 8-bit, 16-bit, 12-bit-in-16.
    rel, path = place(6, "pngrgba", ".png")
    path.write_bytes((src / NIH / "00000100_000.png").read_bytes())
    items["pngrgba"] = (rel, path, _ref_pil(path))
    gray = np.asarray(Image.open(src / "torchxrayvision-tests/00000001_000.png").convert("L"))
    rel, path = place(7, "png08", ".png")
    Image.fromarray(gray).save(path)
    items["png08"] = (rel, path, _ref_pil(path))
    rel, path = place(8, "png16", ".png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"
    items["png16"] = (rel, path, _ref_pil(path))
    rel, path = place(9, "png12", ".png")
    Image.fromarray(gray.astype(np.uint16) * 16).save(path)
    items["png12"] = (rel, path, None)
    # DICOMs: uncompressed and JPEG Baseline as shipped, then variants of the uncompressed one.
    for n, (did, name) in enumerate([("dcmplain", DICOM_PLAIN), ("dcmjpeg", DICOM_JPEG)], start=10):
        rel, path = place(n, did, ".dcm")
        path.write_bytes((src / name).read_bytes())
        items[did] = (rel, path, _ref_dicom(path))
    ds = pydicom.dcmread(src / DICOM_PLAIN)
    px = ds.pixel_array
    mono1 = copy.deepcopy(ds)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    mono1.PixelData = (255 - px).astype(np.uint8).tobytes()
    rel, path = place(12, "dcmmono1", ".dcm")
    mono1.save_as(path)
    items["dcmmono1"] = (rel, path, None)
    # 12 bits stored in 16 with a rescale: the modality LUT and the real-range scaling undo both.
    d16 = copy.deepcopy(ds)
    d16.BitsAllocated, d16.BitsStored, d16.HighBit = 16, 12, 11
    d16.PixelData = (px.astype(np.uint16) * 16 + 5).tobytes()
    d16.RescaleSlope, d16.RescaleIntercept = 2, -100
    rel, path = place(13, "dcm16", ".dcm")
    d16.save_as(path)
    items["dcm16"] = (rel, path, None)
    # A VOI window over the middle of the range: values outside are clipped.
    win = copy.deepcopy(d16)
    win.WindowCenter, win.WindowWidth = 2000, 2000  # in rescaled units (2 * (16 px + 5) - 100)
    rel, path = place(14, "dcmwin", ".dcm")
    win.save_as(path)
    items["dcmwin"] = (rel, path, None)
    # Broken: truncated JPEG, missing file, a non-image.
    rel, path = place(15, "badtrunc", ".jpg")
    whole = (root / items["jpg01"][0]).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    items["badtrunc"] = (rel, path, None)
    items["badmissing"] = (_rel(16, "badmissing"), None, None)
    rel, path = place(17, "badtext", ".jpg")
    path.write_text("not an image\n")
    items["badtext"] = (rel, path, None)

    rows = []
    for stay, (did, (rel, _, _)) in enumerate(sorted(items.items(), reverse=True), start=30000000):
        rows.append({"stay_id": stay, "has_cxr": True, "dicom_id": did, "cxr_path": rel})
    # The same image matched to a second stay, a has_cxr stay without a path, a stay without CXR.
    rows.append({"stay_id": 1, "has_cxr": True, "dicom_id": "jpg01", "cxr_path": items["jpg01"][0]})
    rows.append({"stay_id": 2, "has_cxr": True, "dicom_id": "nopath", "cxr_path": None})
    rows.append({"stay_id": 3, "has_cxr": False, "dicom_id": None, "cxr_path": None})
    schema = {"stay_id": pl.Int64, "has_cxr": pl.Boolean, "dicom_id": pl.String, "cxr_path": pl.String}
    stays = pl.DataFrame(rows, schema=schema)
    stays = stays.sort("stay_id")
    stays_path = base / "stays.parquet"
    stays.write_parquet(stays_path)
    return {"root": root, "stays_path": stays_path, "stays": stays, "items": items, "base": base}


@pytest.fixture(scope="module")
def cache_dir(cxr_tree):
    out = cxr_tree["base"] / "images"
    build_cache(cxr_tree["stays_path"], cxr_tree["root"], out, size=SIZE, strict=False, workers=2)
    return out


def _img(cache: ImageCache, dicom_id: str) -> np.ndarray:
    row = cache.rows_for([dicom_id])[0]
    assert row >= 0, f"{dicom_id} not in the cache"
    return np.asarray(cache.array[row])


GOOD = ["dcm16", "dcmjpeg", "dcmmono1", "dcmplain", "dcmwin", "jpg01", "jpg02", "jpg03", "jpgbig", "jpgwide",
        "png08", "png12", "png16", "pngrgba"]  # fmt: skip
BAD = {"badmissing": "missing", "badtext": "not a JPEG, PNG or DICOM", "badtrunc": "truncated", "nopath": "no cxr_path"}


def test_files_and_index(cache_dir):
    assert sorted(p.name for p in cache_dir.iterdir()) == ["bad_images.csv", "cxr.u8", "index.parquet"]
    index = pl.read_parquet(cache_dir / "index.parquet")
    assert index.columns == ["dicom_id", "row", "source_path"]
    assert index["dicom_id"].to_list() == GOOD  # sorted, each image once although two stays share jpg01
    assert index["row"].to_list() == list(range(len(GOOD)))
    src = dict(zip(index["dicom_id"], index["source_path"]))
    assert src["jpg01"] == _rel(1, "jpg01")
    assert src["dcmplain"] == _rel(10, "dcmplain")[:-4] + ".dcm"  # .jpg missing, .dcm read
    assert src["pngrgba"].endswith("/pngrgba.png")
    assert (cache_dir / "cxr.u8").stat().st_size == len(GOOD) * SIZE * SIZE
    cache = ImageCache(cache_dir)
    assert cache.array.shape == (len(GOOD), SIZE, SIZE) and cache.array.dtype == np.uint8 and cache.size == SIZE
    assert cache.rows_for(["jpg02", "badtrunc", None, "unknown", "dcm16"]).tolist() == [6, -1, -1, -1, 0]


def test_bad_images_listed_with_reasons(cache_dir):
    bad = pl.read_csv(cache_dir / "bad_images.csv")
    assert bad.columns == ["dicom_id", "path", "reason"]
    reasons = dict(zip(bad["dicom_id"], bad["reason"]))
    assert sorted(reasons) == sorted(BAD)
    for did, word in BAD.items():
        assert word in reasons[did], (did, reasons[did])
    paths = dict(zip(bad["dicom_id"], bad["path"]))
    assert paths["badtrunc"] == _rel(15, "badtrunc")


def test_cached_images_match_independent_decode(cxr_tree, cache_dir):
    cache = ImageCache(cache_dir)
    checked = 0
    for did, (_, _, ref) in cxr_tree["items"].items():
        if ref is not None:
            _assert_close(_img(cache, did), ref, did)
            checked += 1
    assert checked == 10
    # A wrong crop would fail: the wide image's reference differs from its left-aligned square.
    wide = np.asarray(Image.open(cxr_tree["items"]["jpgwide"][1]), dtype=np.float64)
    left = np.asarray(Image.fromarray(wide[:, :800].astype(np.float32), "F").resize((SIZE, SIZE), Image.Resampling.BOX))
    cached = _img(cache, "jpgwide")
    assert np.abs(cached - left).mean() > 2 * np.abs(cached - cxr_tree["items"]["jpgwide"][2]).mean()


def test_monochrome1_is_inverted(cache_dir):
    cache = ImageCache(cache_dir)
    plain, mono1 = _img(cache, "dcmplain").astype(int), _img(cache, "dcmmono1").astype(int)
    assert np.abs(plain - mono1).max() <= 1
    assert plain.std() > 20  # a real image, not a flat one


def test_16_bit_sources(cache_dir):
    cache = ImageCache(cache_dir)
    plain = _img(cache, "dcmplain").astype(int)
    # 12-bit DICOM with rescale slope/intercept: same picture as the 8-bit original.
    assert np.abs(_img(cache, "dcm16").astype(int) - plain).max() <= 1
    # 16-bit PNG (x257) is exactly the 8-bit one; 12-bit-in-16 PNG is scaled by 4095, not left dark.
    png8 = _img(cache, "png08").astype(int)
    assert np.array_equal(_img(cache, "png16").astype(int), png8)
    assert np.abs(_img(cache, "png12").astype(int) - png8).max() <= 2
    assert np.abs(_img(cache, "png12").astype(int) - png8).mean() < 1.0


def test_voi_window_applied(cxr_tree, cache_dir):
    ds = pydicom.dcmread(cxr_tree["items"]["dcmwin"][1])
    x = ds.pixel_array.astype(np.float64) * 2 - 100
    c, w = 2000.0, 2000.0
    # DICOM PS3.3 C.11.2.1.2 linear window, then the real range to 0..255.
    y = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    y = (y - y.min()) / (y.max() - y.min()) * 255
    cached = _img(ImageCache(cache_dir), "dcmwin")
    _assert_close(cached, _ref_square(y), "dcmwin")
    # Clipping happened: the windowed image differs clearly from the unwindowed one.
    assert np.abs(cached.astype(int) - _img(ImageCache(cache_dir), "dcm16").astype(int)).mean() > 10


def test_deterministic_across_worker_counts(cxr_tree, cache_dir, tmp_path):
    build_cache(cxr_tree["stays_path"], cxr_tree["root"], tmp_path, size=SIZE, strict=False, workers=1)
    assert (tmp_path / "cxr.u8").read_bytes() == (cache_dir / "cxr.u8").read_bytes()
    assert pl.read_parquet(tmp_path / "index.parquet").equals(pl.read_parquet(cache_dir / "index.parquet"))


def test_strict_raises_naming_file_and_keeps_old_cache(cxr_tree, tmp_path):
    good = cxr_tree["stays"].filter(pl.col("dicom_id").is_in(["jpg01", "png08"]))
    good_path = tmp_path / "good.parquet"
    good.write_parquet(good_path)
    out = tmp_path / "images"
    build_cache(good_path, cxr_tree["root"], out, size=SIZE, strict=True, workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=r"badmissing\.jpg"):  # first bad one in dicom_id order
        build_cache(cxr_tree["stays_path"], cxr_tree["root"], out, size=SIZE, strict=True, workers=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written


def test_usable_cxr(cxr_tree, cache_dir):
    stays = cxr_tree["stays"]
    mask = usable_cxr(stays, cache_dir)
    expected = [bool(h) and d in GOOD for h, d in zip(stays["has_cxr"], stays["dicom_id"])]
    assert mask.dtype == bool and mask.tolist() == expected
    assert mask.sum() == len(GOOD) + 1  # jpg01 serves two stays
    assert not mask[stays["dicom_id"].is_in(list(BAD)).fill_null(False).to_numpy()].any()
    assert not mask[(~stays["has_cxr"]).to_numpy()].any()


def test_user_errors_name_the_input(cxr_tree, tmp_path):
    with pytest.raises(UserError, match="stays table not found"):
        build_cache(tmp_path / "nope.parquet", cxr_tree["root"], tmp_path / "o", size=SIZE, strict=False, workers=1)
    with pytest.raises(UserError, match="CXR image root not found"):
        build_cache(cxr_tree["stays_path"], tmp_path / "noroot", tmp_path / "o", size=SIZE, strict=False, workers=1)
    with pytest.raises(UserError, match="image cache file not found"):
        ImageCache(tmp_path / "o")


def test_truncated_jpeg_rejected_even_when_pillow_tolerates_it(cxr_tree, tmp_path, monkeypatch):
    # Some libraries set this global; Pillow would then fill the missing half with grey.
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    stays = cxr_tree["stays"].filter(pl.col("dicom_id").is_in(["badtrunc", "jpg02"]))
    stays_path = tmp_path / "stays.parquet"
    stays.write_parquet(stays_path)
    build_cache(stays_path, cxr_tree["root"], tmp_path / "images", size=SIZE, strict=False, workers=1)
    assert pl.read_parquet(tmp_path / "images" / "index.parquet")["dicom_id"].to_list() == ["jpg02"]
    bad = pl.read_csv(tmp_path / "images" / "bad_images.csv")
    assert bad["dicom_id"].to_list() == ["badtrunc"] and "truncated" in bad["reason"][0]


def test_too_many_missing_images_fail_naming_count_and_paths(cxr_tree, tmp_path):
    # 4 of the 18 images are bad (22 %): an incomplete download must not shrink the matched set
    out = tmp_path / "images"
    with pytest.raises(UserError) as err:
        build_cache(
            cxr_tree["stays_path"], cxr_tree["root"], out, size=SIZE, strict=False, workers=1, max_missing_share=0.2
        )
    msg = str(err.value)
    assert "4 of the cohort's 18 chest X-rays (22.2%)" in msg and "images.max_missing_share = 0.2" in msg
    assert str(cxr_tree["root"] / _rel(16, "badmissing")) in msg and "cxr_files.txt" in msg
    assert not out.exists() or not any(out.iterdir())  # nothing written, no temp file left
    build_cache(
        cxr_tree["stays_path"], cxr_tree["root"], out, size=SIZE, strict=False, workers=1, max_missing_share=0.25
    )
    assert pl.read_csv(out / "bad_images.csv").height == 4


def test_a_split_without_an_image_fails_the_stage_naming_the_counts(cxr_tree, tmp_path):
    """Issue-26 probe: an empty matched train/val/test split surfaced only when the training runs
    failed ("no stays in the test split of the matched dataset"). Checked before decoding (no stay
    of the split has a CXR match) and after (none has a readable image)."""
    stays = cxr_tree["stays"]
    # the val split: jpg01's second stay; test: the stay without a path (unreadable), the one without CXR
    splits = {1: "val", 2: "test", 3: "test"}
    with_splits = stays.with_columns(split=pl.col("stay_id").replace_strict(splits, default="train"))
    unreadable = tmp_path / "unreadable.parquet"
    with_splits.write_parquet(unreadable)
    out = tmp_path / "images"
    with pytest.raises(UserError) as err:
        build_cache(unreadable, cxr_tree["root"], out, size=SIZE, strict=False, workers=1)
    assert str(err.value) == (
        f"images: no stay of the test split has a readable chest X-ray (train {len(GOOD)}, val 1, test 0 stays of "
        f"{unreadable}): the matched dataset needs some in every split; complete the MIMIC-CXR-JPG download "
        "(cohort/cxr_files.txt lists the files)"
    )
    assert not out.exists() or not any(out.iterdir())  # nothing written
    # no CXR match at all in val and test: refused before any image is decoded
    unmatched = tmp_path / "unmatched.parquet"
    with_splits.with_columns(
        has_cxr=pl.when(pl.col("split") == "train").then(pl.col("has_cxr")).otherwise(False)
    ).write_parquet(unmatched)
    with pytest.raises(UserError) as err:
        build_cache(unmatched, tmp_path / "no-such-root", out, size=SIZE, strict=False, workers=1)
    assert str(err.value).startswith("images: no stay of the val and test splits has a chest X-ray matched (train ")
    # every split with a readable image: built
    with_splits.with_columns(
        split=pl.col("stay_id").replace_strict({1: "val", 30000000: "test"}, default="train")
    ).write_parquet(unreadable)
    build_cache(unreadable, cxr_tree["root"], out, size=SIZE, strict=False, workers=1)
    assert pl.read_parquet(out / "index.parquet").height == len(GOOD)


def test_compressed_dicom_without_the_extra_names_it(cxr_samples_dir, tmp_path):
    # pylibjpeg (GPLv3) is an optional extra. Pillow decodes JPEG Baseline DICOM by itself; JPEG
    # Lossless (12-16 bit radiographs) needs the extra: without it the image is a bad image whose
    # reason says what to install. Run where pylibjpeg and libjpeg cannot be imported.
    import subprocess
    import sys

    from pydicom.uid import JPEGLosslessSV1

    ds = pydicom.dcmread(cxr_samples_dir / DICOM_JPEG)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    (tmp_path / "files").mkdir()
    ds.save_as(tmp_path / "files" / "lossless.dcm", enforce_file_format=True)
    code = (
        "import sys\n"
        "sys.modules['pylibjpeg'] = sys.modules['libjpeg'] = None  # as if the extra were not installed\n"
        "from drfuse.images.decode import decode_task\n"
        f"print(decode_task(('d', 'files/lossless.dcm', {str(tmp_path)!r}, 32))[3])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "compressed DICOM (JPEG Lossless" in result.stdout, result.stdout
    assert "pip install 'drfuse[dicom]'" in result.stdout


def _children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_images_stage_leaves_no_workers_and_its_temp_files_go(cxr_tree, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    # Enough MIMIC-sized JPEGs (hard links of one file) that decoding lasts a few seconds.
    src = cxr_tree["root"] / cxr_tree["items"]["jpgbig"][0]
    root = tmp_path / "cxr"
    rows = []
    for n in range(400):
        rel = _rel(200 + n, f"k{n:03d}")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(src, root / rel)
        rows.append({"stay_id": n, "has_cxr": True, "dicom_id": f"k{n:03d}", "cxr_path": rel})
    stays = tmp_path / "stays.parquet"
    pl.DataFrame(rows).write_parquet(stays)
    out = tmp_path / "images"
    code = (
        "from drfuse.images.cache import build_cache\n"
        f"build_cache({str(stays)!r}, {str(root)!r}, {str(out)!r}, size=32, strict=False, workers=2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2 and list(out.glob(".staging.*.tmp/cxr.u8")):
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "the stage ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "image workers outlived their killed parent"

    stale = sorted(p.name for p in out.glob(".*.tmp*"))
    assert [name.split(".")[2] for name in stale] == [str(proc.pid)]  # what the killed run left
    small = tmp_path / "small.parquet"
    pl.DataFrame(rows[:3]).write_parquet(small)
    build_cache(small, root, out, size=32, strict=False, workers=1)
    assert sorted(p.name for p in out.iterdir()) == ["bad_images.csv", "cxr.u8", "index.parquet"]
