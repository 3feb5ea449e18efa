"""``wps-sam serve`` in a real headless Chromium: upload, overlay, parts table; faults are messages.

The browser is Debian's chromium driven by Playwright (``.ci/run`` installs both); the app runs on a
free local port in this process.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from wps_sam.build import build_wps_sam
from wps_sam.config import load_config
from wps_sam.errors import CheckpointError, DataError
from wps_sam.predictor import PartPredictor
from wps_sam.serve import PartSegmenter, build_app, parts_table

pytest.importorskip("gradio", reason="the app extra is part of [dev]")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is part of [dev]")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAMES = ["head", "body", "tail"]


@pytest.fixture(scope="module")
def predictor(mini_sam):
    torch.manual_seed(0)
    # At most 6 parts: the page's table renders only the rows in view.
    cfg = load_config(
        overrides=["train.recipe=dense", "prompter.dense_width=16", "prompter.dense_max_parts=6"]
    )
    model = build_wps_sam(cfg, len(NAMES), mini_sam)
    with torch.no_grad():
        model.prompter.heatmap[-1].bias.fill_(1.0)  # confident peaks: several parts per image
    return PartPredictor(model, NAMES, cfg, torch.device("cpu"))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    pixels = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((20, 20, 1))).astype(np.uint8)  # blocks
    path = tmp_path_factory.mktemp("img") / "blocks.png"
    Image.fromarray(pixels).save(path)
    return path


def _bomb(path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))  # fmt: skip
    return path


def test_segment_is_the_predictors_and_thresholds_reuse_the_embedding(predictor, image_file, monkeypatch):
    segmenter = PartSegmenter(predictor)
    image = np.asarray(Image.open(image_file).convert("RGB"))
    want = parts_table(predictor.predict(image), *image.shape[:2])
    overlay, table, files = segmenter.segment(str(image_file))
    assert table == want and len(table) >= 2 and overlay.shape[0] == image.shape[0]
    assert [f.rsplit("/", 1)[1] for f in files] == ["blocks.png", "predictions.json"]
    calls = []
    real = predictor.embed
    monkeypatch.setattr(predictor, "embed", lambda x: calls.append(1) or real(x))
    _, fewer, _ = segmenter.segment(str(image_file), score_threshold=0.99)
    _, only_head, _ = segmenter.segment(str(image_file), classes=["head"])
    assert calls == [] and len(fewer) < len(table) and {row[0] for row in only_head} <= {"head"}


def _mirroring(predictor: PartPredictor, flip_test: bool) -> PartPredictor:
    inference = dataclasses.replace(predictor.cfg.inference, flip_test=flip_test)
    return PartPredictor(
        predictor.model, NAMES, dataclasses.replace(predictor.cfg, inference=inference), predictor.device
    )


def test_a_mirroring_run_caches_both_views_and_segments_as_its_predictor(predictor, image_file, monkeypatch):
    mirroring = _mirroring(predictor, True)
    segmenter = PartSegmenter(mirroring)
    image = np.asarray(Image.open(image_file).convert("RGB"))
    _, table, _ = segmenter.segment(str(image_file))
    assert table == parts_table(mirroring.predict(image), *image.shape[:2])
    single_view = _mirroring(predictor, False).predict(image)
    assert table != parts_table(single_view, *image.shape[:2])  # the mirror counts
    calls = []
    for name in ("embed", "embed_mirrored"):
        monkeypatch.setattr(mirroring, name, lambda x, name=name: calls.append(name))
    _, again, _ = segmenter.segment(str(image_file))
    assert calls == [] and again == table


def test_faulty_inputs_are_clear_errors(predictor, tmp_path):
    segmenter = PartSegmenter(predictor)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataError, match="cannot be read"):
        segmenter.segment(str(tmp_path / "text.jpg"))
    with pytest.raises(DataError, match="decompression bomb"):
        segmenter.segment(str(_bomb(tmp_path / "bomb.png")))
    for mode in ("L", "CMYK"):  # converted, not refused
        Image.new(mode, (40, 30)).save(tmp_path / f"{mode}.jpg")
        _, _, files = segmenter.segment(str(tmp_path / f"{mode}.jpg"))
        assert np.asarray(Image.open(files[0])).shape == (30, 40)  # the label map, in the image's frame
    with pytest.raises(CheckpointError):
        segmenter.load_run(str(tmp_path / "no-run"))
    assert segmenter.predictor is predictor


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(predictor):
    app = build_app(PartSegmenter(predictor))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def page(server):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server)
        yield page
        browser.close()


def _upload(page, path):
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _table_rows(page):
    """The parts table as the page shows it (Gradio's data frame: one grid cell per value)."""
    count = int(page.locator("#table [role=grid]").get_attribute("aria-rowcount")) - 1  # minus the header
    rows = []
    for r in range(count):
        texts = [page.locator(f'#table [data-testid="cell-{r}-{c}"]').inner_text().strip() for c in range(3)]
        rows.append([texts[0], float(texts[1]), float(texts[2])])
    return rows


@pytest.mark.slow
def test_upload_shows_the_overlay_and_the_predictors_parts(page, predictor, image_file):
    _upload(page, image_file)
    page.locator("#overlay img").wait_for(timeout=30_000)
    page.locator("#status", has_text="part(s)").wait_for(timeout=30_000)
    image = np.asarray(Image.open(image_file).convert("RGB"))
    assert _table_rows(page) == parts_table(predictor.predict(image), *image.shape[:2])


@pytest.mark.slow
def test_a_broken_file_is_a_message_and_the_next_upload_works(page, tmp_path, image_file):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _upload(page, tmp_path / "broken.jpg")
    page.locator("#status", has_text="Cannot use this input").wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
    page.locator('#upload button[aria-label="Clear"]').click()  # as a user removes the file
    _upload(page, image_file)
    page.locator("#status", has_text="part(s)").wait_for(timeout=30_000)
    assert len(_table_rows(page)) >= 2


@pytest.mark.slow
def test_the_predict_endpoint_answers_gradio_client(server, predictor, image_file):
    from gradio_client import Client, handle_file

    overlay, table = Client(server, verbose=False).predict(handle_file(str(image_file)), api_name="/predict")
    image = np.asarray(Image.open(image_file).convert("RGB"))
    want = parts_table(predictor.predict(image), *image.shape[:2])
    assert [[r[0], float(r[1]), float(r[2])] for r in table["data"]] == want


@pytest.mark.slow
def test_a_run_of_another_sam_is_a_message_in_the_page(page, predictor, tmp_path, image_file):
    import dataclasses

    from wps_sam.engine.run_dir import save_weights

    cfg = predictor.cfg
    cfg = dataclasses.replace(
        cfg, sam=dataclasses.replace(cfg.sam, type="vit_b", checkpoint=str(tmp_path / "gone.pth"))
    )
    save_weights(tmp_path, predictor.model.prompter, NAMES, cfg, "")
    page.get_by_text("another run").click()  # open the accordion
    page.locator("#run textarea, #run input").first.fill(str(tmp_path))
    page.locator("#load").click()
    page.locator("#status", has_text="Cannot use this input").wait_for(timeout=30_000)
    assert "gone.pth" in page.locator("#status").inner_text()
    _upload(page, image_file)  # the current run still serves
    page.locator("#status", has_text="part(s)").wait_for(timeout=30_000)


def test_the_embedded_default_serves_the_bundled_examples():
    from wps_sam.predictor import shipped_demo_prompter
    from wps_sam.sam.backbones import SHIPPED_TINY_SHA256
    from wps_sam.serve import bundled_examples

    predictor = PartPredictor.from_weights(shipped_demo_prompter(), "cpu")
    assert predictor.cfg.sam.type == "tiny" and predictor.cfg.sam.sha256 == SHIPPED_TINY_SHA256
    examples = bundled_examples()
    assert len(examples) == 4
    _, table, _ = PartSegmenter(predictor).segment(str(examples[0]))
    assert table and all(name in predictor.class_names for name, _, _ in table)


@pytest.mark.slow
def test_the_command_lines_inference_settings_reach_the_served_run():
    from gradio_client import Client, handle_file

    from wps_sam.serve import bundled_examples, serve

    port = _free_port()
    app = serve(  # the shipped demo prompter, as `wps-sam serve --device cpu --set ... --no-flip-test`
        None, port=port, block=False, device="cpu", flip_test=False,
        inference=["inference.score_threshold=1.0"],
    )  # fmt: skip
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, table = client.predict(handle_file(str(bundled_examples()[0])), api_name="/predict")
    finally:
        app.close()
    assert table["data"] == []  # no class probability reaches 1.0; with the run's own: parts (above)
