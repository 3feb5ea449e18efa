"""Triage of a faulty data set: every fault an annotation tool exports is skipped or repaired, with a reason,
and check-data, train, eval and predict agree on what is skipped."""

import json
import logging
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from tests.data.fixtures import rectangle_polygon, uncompressed_rle, write_part_dataset

from wps_sam.cli import main
from wps_sam.data.checks import ImageVerdict, check_data, format_report, inspect_image, triaged_split
from wps_sam.errors import DataError

SMALL_PROMPTER = [
    "prompter.enc_layers=1", "prompter.dec_layers=1", "prompter.hidden_dim=32", "prompter.nheads=2",
    "prompter.dim_feedforward=64", "prompter.num_queries=4", "train.warmup_steps=1", "train.log_every=1",
]  # fmt: skip

H, W = 30, 40  # every faulty image is this size as displayed


@pytest.fixture(autouse=True, scope="module")
def _isolated(tmp_path_factory):
    """A private embedding cache, and one intra-op thread: on a small shared CPU, torch's default
    threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WPS_SAM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


def _png_header_only(path, width, height):
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb: only its header is read)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))  # fmt: skip


def _rgb(seed=0, height=H, width=W):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _jpeg_bytes(array, **kwargs):
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


# file name -> (writer, expected keyword of the reason) for images that must be skipped.
def _bad_images(folder):
    jpeg = _jpeg_bytes(_rgb(1))
    png = folder / "tmp.png"
    Image.fromarray(_rgb(2)).save(png)
    png_bytes = png.read_bytes()
    png.unlink()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "no_end.png").write_bytes(png_bytes[:-12])  # loads, but verify() misses the end chunk
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "garbage.png").write_bytes(b"this is not an image" * 10)
    _png_header_only(folder / "bomb.png", 20000, 20000)
    return {
        "missing.jpg": "not found",
        "truncated.jpg": "truncated",
        "no_end.png": "truncated",
        "empty.jpg": "empty file",
        "garbage.png": "not an image",
        "bomb.png": "decompression bomb",
    }


# file name -> expected keyword of the repair, for images that are converted when read.
def _convertible_images(folder):
    rgb = _rgb(3)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored W x H, displayed H x W
    (folder / "rotated.jpg").write_bytes(_jpeg_bytes(np.ascontiguousarray(rgb.transpose(1, 0, 2)), exif=exif))
    return {
        "gray.png": "grayscale",
        "rgba.png": "alpha dropped",
        "palette.png": "palette",
        "cmyk.jpg": "CMYK",
        "deep.png": "16-bit",
        "rotated.jpg": "EXIF orientation 6",
    }


def write_faulty_dataset(root, split="train"):
    """A part data set with every fault of the reliability issue; returns what triage must report.

    Four good images come from ``write_part_dataset``; then images that must be skipped, images that
    reading converts, an image whose json size is twice its file's, an image without json size, and
    annotations that must be skipped or repaired.
    """
    json_path = write_part_dataset(root, split, 4, max_parts=1, seed=7)
    data = json.loads(json_path.read_text())
    folder = root / "images" / split
    bad, convertible = _bad_images(folder), _convertible_images(folder)
    Image.fromarray(_rgb(4)).save(folder / "resized.png")
    Image.fromarray(_rgb(5)).save(folder / "no_size.png")
    poly = [rectangle_polygon(2, 2, 20, 20)]
    next_id = 100

    def add_image(file_name, height=H, width=W, n_parts=1):
        nonlocal next_id
        image_id = 500 + len(data["images"])
        record = {"id": image_id, "file_name": file_name}
        if height is not None:
            record.update(height=height, width=width)
        data["images"].append(record)
        ids = []
        for _ in range(n_parts):
            next_id += 1
            ids.append(next_id)
            data["annotations"].append({"id": next_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                        "bbox": [2, 2, 18, 18], "segmentation": poly})  # fmt: skip
        return image_id, ids

    bad_anns = {}
    for name in bad:
        _, ids = add_image(name)
        bad_anns.update(dict.fromkeys(ids, "its image is skipped"))
    for name in convertible:
        add_image(name)
    resized_id, _ = add_image("resized.png", height=2 * H, width=2 * W)
    add_image("no_size.png", height=None)

    # Faulty annotations, all on the first good image.
    image = data["images"][0]
    h, w = image["height"], image["width"]
    good_poly = [rectangle_polygon(1, 1, 9, 9)]
    base = {"image_id": image["id"], "category_id": 1, "iscrowd": 0, "segmentation": good_poly}
    rle = uncompressed_rle(np.ones((h, w), bool))
    faulty = {
        1: ({**base, "bbox": [3, 3, 0, 5], "segmentation": None}, "zero area"),
        2: ({**base, "bbox": [math.nan, 1, 5, 5], "segmentation": None}, "non-finite"),
        3: ({**base, "bbox": [w + 10, 1, 5, 5], "segmentation": None}, "outside"),
        4: ({**base, "bbox": [1, 1, 5, 5], "category_id": 999}, "unknown category"),
        5: ({**base, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 5, 1], [3, 3]]}, "degenerate polygon"),
        6: (
            {**base, "bbox": [1, 1, 5, 5], "segmentation": {"size": [h, w], "counts": [1, 2, 3]}},
            "malformed RLE",
        ),  # fmt: skip
        7: (
            {**base, "bbox": [1, 1, 5, 5], "segmentation": {"size": [h, w], "counts": "0\x7f!!"}},
            "malformed RLE",
        ),  # fmt: skip
        8: ({**base, "bbox": [1, 1, 5, 5], "image_id": 99999}, "image id"),
    }
    repairs = {
        20: ({**base, "bbox": [w - 4, h - 4, 10, 10]}, "clipped"),
        21: ({**base, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 5, 1], good_poly[0]]}, "degenerate polygon"),
        22: ({**base, "bbox": [1, 1, 5, 5], "segmentation": {**rle, "size": [2 * h, 2 * w],
                                                               "counts": [0, 4 * h * w]}}, "resized"),
    }  # fmt: skip
    for ann_id, (ann, _) in {**faulty, **repairs}.items():
        data["annotations"].append({**ann, "id": ann_id})
    data["annotations"].append("not an annotation")
    json_path.write_text(json.dumps(data))  # Python's json writes and reads NaN
    expected = {
        "images_skipped": bad,
        "annotations_skipped": {**{k: v for k, (_, v) in faulty.items()}, **bad_anns, None: "not an object"},
        "image_repairs": {**convertible, "resized.png": "json size", "no_size.png": "read from the file"},
        "annotation_repairs": {k: v for k, (_, v) in repairs.items()},
        "images_total": 4 + len(bad) + len(convertible) + 2,
        "resized_id": resized_id,
    }
    return expected


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    expected = write_faulty_dataset(root)
    return root, expected


def test_check_data_skips_and_repairs_every_fault_with_its_reason(faulty):
    root, expected = faulty
    report = check_data(root, "train")
    assert set(report) == {
        "images_total",
        "images_usable",
        "parts_usable",
        "parts_point_only",
        "images_skipped",
        "annotations_skipped",
        "repaired",
    }
    json.dumps(report, allow_nan=False)  # --json output is strict JSON
    assert report["images_total"] == expected["images_total"]
    assert report["images_usable"] == expected["images_total"] - len(expected["images_skipped"])

    skipped = {r["file"]: r["reason"] for r in report["images_skipped"]}
    assert skipped.keys() == expected["images_skipped"].keys()
    for name, keyword in expected["images_skipped"].items():
        assert keyword in skipped[name], (name, skipped[name])

    skipped = {r["id"]: r["reason"] for r in report["annotations_skipped"]}
    assert skipped.keys() == expected["annotations_skipped"].keys()
    for ann_id, keyword in expected["annotations_skipped"].items():
        assert keyword in skipped[ann_id], (ann_id, skipped[ann_id])

    by_file = {}
    for r in report["repaired"]:
        if "id" not in r:
            by_file.setdefault(r["file"], []).append(r["reason"])
    assert by_file.keys() == expected["image_repairs"].keys()
    for name, keyword in expected["image_repairs"].items():
        assert any(keyword in reason for reason in by_file[name]), (name, by_file[name])
    by_ann = {r["id"]: r["reason"] for r in report["repaired"] if "id" in r}
    assert by_ann.keys() == expected["annotation_repairs"].keys()
    for ann_id, keyword in expected["annotation_repairs"].items():
        assert keyword in by_ann[ann_id], (ann_id, by_ann[ann_id])

    text = format_report(report)
    assert f"{report['images_usable']} usable of {report['images_total']}" in text
    assert "bomb.png: decompression bomb" in text


def test_triaged_split_keeps_only_usable_images_in_the_files_frame(faulty, caplog):
    root, expected = faulty
    with caplog.at_level(logging.WARNING):
        index = triaged_split(root, "train")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "check-data" in warnings[0].getMessage()
    names = {entry.file_name for entry in index.images}
    assert not names & expected["images_skipped"].keys()
    assert len(names) == expected["images_total"] - len(expected["images_skipped"])
    resized = next(e for e in index.images if e.image_id == expected["resized_id"])
    assert (resized.height, resized.width) == (H, W)  # the file wins; boxes scaled with it
    np.testing.assert_allclose(resized.parts[0].box, [1, 1, 10, 10])
    rotated = next(e for e in index.images if e.file_name == "rotated.jpg")
    assert (rotated.height, rotated.width) == (H, W)
    with pytest.raises(DataError, match=r"--strict: .*skipped 6 of \d+ image\(s\)") as info:
        triaged_split(root, "train", strict=True)
    assert "\n" not in str(info.value)


def test_a_bomb_is_refused_even_without_pillows_limit(tmp_path, monkeypatch):
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # some libraries switch Pillow's check off
    verdict = inspect_image(tmp_path / "bomb.png")
    assert verdict.problem is not None and "decompression bomb" in verdict.problem
    Image.fromarray(_rgb()).save(tmp_path / "ok.png")
    assert inspect_image(tmp_path / "ok.png") == ImageVerdict(None, (), (H, W))


def test_check_data_cli_json_and_text(faulty, capsys):
    root, expected = faulty
    assert main(["check-data", "--data", str(root), "--split", "train", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["images_skipped"]) == len(expected["images_skipped"])
    assert main(["check-data", "--data", str(root), "--no-progress"]) == 0
    assert "skipped images: 6" in capsys.readouterr().out
    assert main(["check-data", "--data", str(root), "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--strict" in err
    assert main(["check-data", "--data", str(root / "nowhere"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err


@pytest.mark.slow
def test_train_eval_predict_skip_what_check_data_skips(tmp_path, faulty, sam_file, capsys, caplog):
    root, expected = faulty
    run = tmp_path / "run"
    train = ["train", "--data", str(root), "--out", str(run), "--sam-type", "vit_mini", "--sam-checkpoint",
             str(sam_file), "--max-steps", "1", "--batch-size", "1", "--no-progress", "--set", *SMALL_PROMPTER,
             "train.validate=false"]  # fmt: skip
    assert main([*train, "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--strict" in err and "skipped 6" in err
    assert not (run / "model.safetensors").exists()

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(train) == 0
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert (run / "model.safetensors").is_file()

    # eval on a small faulty split: a truncated image and an annotation of an unknown image
    val = tmp_path / "val"
    json_path = write_part_dataset(val, "val", 1, max_parts=1, seed=3)
    data = json.loads(json_path.read_text())
    (val / "images" / "val" / "cut.jpg").write_bytes(_jpeg_bytes(_rgb())[:300])
    data["images"].append({"id": 9, "file_name": "cut.jpg", "height": H, "width": W})
    data["annotations"].append({**data["annotations"][0], "id": 77, "image_id": 12345})
    json_path.write_text(json.dumps(data))
    eval_args = ["eval", str(run), "--data", str(val), "--split", "val", "--no-progress"]
    assert main([*eval_args, "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(eval_args) == 0
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [logging.WARNING]
    assert json.loads((run / "eval-val.json").read_text())["miou"] >= 0.0

    # predict: every readable input is processed, the unreadable ones are named in one line
    inputs = root / "images" / "train"
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["predict", str(run), str(inputs / "gray.png"), str(inputs / "empty.jpg"),
                 str(inputs / "truncated.jpg"), "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 unreadable" in err[0] and "empty.jpg" in err[0]
    predictions = json.loads((out / "predictions.json").read_text())
    assert [r["file"].rsplit("/", 1)[-1] for r in predictions["images"]] == ["gray.png"]
    assert len(predictions["unreadable"]) == 2
    assert main(["predict", str(run), str(inputs / "gray.png"), str(inputs / "empty.jpg"), "--out",
                 str(tmp_path / "strict"), "--strict", "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty.jpg" in err
