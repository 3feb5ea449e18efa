"""``wps-sam serve``: WPS-SAM in the browser, a Gradio app, and the same prediction as an API endpoint.

The page takes an uploaded image (or a bundled example), shows the part overlay with its legend and a
table of the parts (class, score, area in % of the image), and offers the label PNG and
``predictions.json`` that ``wps-sam predict`` writes. A score threshold, a mask threshold and the
classes to show change the view without another encoder pass: the SAM embeddings of the last images
are kept, as segment-anything's ``SamPredictor`` keeps its image's. Another run can be loaded from the
page. Every fault (a file that is not an image, a decompression bomb, a run of another SAM) is one
line in the page; the server keeps serving.

The endpoint ``predict`` (``gradio_client``: ``client.predict(handle_file(path), api_name="/predict")``)
returns the overlay and the parts table for an image, with the run's own thresholds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_json
from .data.images import read_image
from .errors import WpsSamError
from .export import prediction_record, save_label_map
from .predictor import DEMO_RUN, PartPredictor, PartSegmentation
from .viz import overlay

logger = logging.getLogger(__name__)

TABLE_HEADERS = ["class", "score", "area (%)"]
CACHED_IMAGES = 8  # SAM embeddings kept, most recent first
MAX_UPLOAD = "50mb"


def bundled_examples() -> list[Path]:
    """The example images that ship in the package (ToyParts validation images)."""
    folder = Path(str(resources.files("wps_sam") / "examples"))
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


def parts_table(result: PartSegmentation, height: int, width: int) -> list[list[Any]]:
    """Rows ``[class, score, area %]`` of the parts of ``result``, as the page and the API show them."""
    pixels = float(height * width)
    return [
        [inst.class_name, round(inst.score, 3), round(100.0 * float(inst.mask.sum()) / pixels, 2)]
        for inst in result.instances
    ]


class PartSegmenter:
    """The app's state: a predictor, the embeddings of recent images and the files offered for download."""

    def __init__(self, predictor: PartPredictor, out_dir: Path | None = None) -> None:
        self.predictor = predictor
        # digest -> (embedding, mirror image's embedding or None): see PartPredictor.embed_mirrored
        self.embeddings: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self.out_dir = out_dir or Path(tempfile.mkdtemp(prefix="wps-sam-serve-"))

    def load_run(self, run: str) -> str:
        """Swap in the model of ``run`` (a run folder, a weights file or "demo": see
        :func:`~wps_sam.predictor.prompter_weights`); a run that cannot be used leaves the current one."""
        predictor = PartPredictor.from_run(run.strip(), str(self.predictor.device))
        self.predictor, self.embeddings = predictor, OrderedDict()
        return f"loaded {run.strip()}: {len(predictor.class_names)} part classes"

    def embedding(self, image: np.ndarray, key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SAM's embedding of ``image`` (``key``: its digest) and, when the run mirrors at test time,
        its mirror image's; computed once while the image stays recent."""
        if key not in self.embeddings:
            batch = self.predictor.transform.apply_image(image)[None]
            self.embeddings[key] = (self.predictor.embed(batch), self.predictor.embed_mirrored(batch))
            while len(self.embeddings) > CACHED_IMAGES:
                self.embeddings.popitem(last=False)
        self.embeddings.move_to_end(key)
        return self.embeddings[key]

    def segment(
        self,
        path: str,
        score_threshold: float | None = None,
        mask_probability: float | None = None,
        classes: list[str] | None = None,
    ) -> tuple[np.ndarray, list[list[Any]], list[str]]:
        """Overlay, parts table and download files of the image at ``path`` (only ``classes`` shown)."""
        image = read_image(Path(path))
        height, width = image.shape[:2]
        key = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()
        embedding, mirrored = self.embedding(image, key)
        result = self.predictor.decode(
            embedding, [(height, width)], score_threshold, mask_probability, mirrored_embeddings=mirrored
        )[0]
        names = self.predictor.class_names
        if classes is not None:
            shown = {names.index(c) for c in classes if c in names}
            hidden = np.isin(result.label_map, [k + 1 for k in range(len(names)) if k not in shown])
            result = PartSegmentation(
                np.where(hidden, 0, result.label_map), [i for i in result.instances if i.class_id in shown]
            )
        folder = self.out_dir / key[:16]  # one folder per image: the names `wps-sam predict` writes
        folder.mkdir(parents=True, exist_ok=True)
        label_png = save_label_map(folder / f"{Path(path).stem}.png", result.label_map)
        record = prediction_record(Path(path).name, height, width, result.instances)
        predictions = atomic_write_json(
            folder / "predictions.json", {"class_names": names, "images": [record], "unreadable": []}
        )
        view = overlay(image, result.label_map, names)
        return view, parts_table(result, height, width), [str(label_png), str(predictions)]


def _message(exc: Exception) -> str:
    if isinstance(exc, WpsSamError):
        return f"**Cannot use this input:** {exc}"
    logger.exception("serve: unexpected error")
    return f"**Something went wrong** ({type(exc).__name__}); the server keeps serving, try another input."


def build_app(segmenter: PartSegmenter, examples: list[Path] | None = None) -> Any:
    """The Gradio ``Blocks`` of the page and the ``predict`` endpoint."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline and private by default
    import gradio as gr

    cfg = segmenter.predictor.cfg.inference
    default_mask = float(torch.sigmoid(torch.tensor(cfg.mask_threshold)))
    names = segmenter.predictor.class_names

    def view(path, score, mask, classes):
        if not path:  # cleared: the message of the last input stays until the next one
            return None, [], None, gr.update()
        try:
            image, table, files = segmenter.segment(path, score, mask, classes)
            return image, table, files, f"{len(table)} part(s)"
        except Exception as exc:  # noqa: BLE001 - every fault is a message in the page
            return None, [], None, _message(exc)

    def api_predict(path):
        try:
            image, table, _ = segmenter.segment(path)
            return image, table
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(_message(exc).replace("**", "")) from None

    def load(run):
        try:
            message = segmenter.load_run(run)
            classes = segmenter.predictor.class_names
            return message, gr.update(choices=classes, value=classes)
        except Exception as exc:  # noqa: BLE001
            return _message(exc), gr.update()

    with gr.Blocks(title="WPS-SAM") as app:
        gr.Markdown("# WPS-SAM: part segmentation from a frozen SAM, trained from boxes or points")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="image", file_types=["image"], type="filepath", elem_id="upload")
                score = gr.Slider(0.0, 1.0, value=cfg.score_threshold, step=0.01, label="score threshold")
                mask = gr.Slider(
                    0.05, 0.95, value=default_mask, step=0.01, label="mask threshold (probability)"
                )
                classes = gr.CheckboxGroup(names, value=names, label="classes to show", elem_id="classes")
                with gr.Accordion("another run", open=False):
                    run = gr.Textbox(label='run folder, weights file or "demo"', elem_id="run")
                    load_button = gr.Button("load run", elem_id="load")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                shown = gr.Image(label="parts", type="numpy", interactive=False, elem_id="overlay")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="parts", interactive=False, elem_id="table")
                files = gr.File(
                    label="label PNG and predictions.json", file_count="multiple", elem_id="files"
                )
        if examples:
            gr.Examples([[str(p)] for p in examples], inputs=[upload], label="examples")
        inputs = [upload, score, mask, classes]
        outputs = [shown, table, files, status]
        upload.change(view, inputs, outputs, api_name=False)
        for control in (score, mask, classes):
            control.change(view, inputs, outputs, api_name=False)
        load_button.click(load, [run], [status, classes], api_name=False)
        gr.Button(visible=False).click(api_predict, [upload], [shown, table], api_name="predict")
    return app


def serve(
    run: str | None,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    device: str = "auto",
    **options: Any,
) -> Any:
    """Launch the app for ``run`` (None: the shipped demo prompter on the shipped tiny SAM) on
    ``device``; ``options`` (``sam_checkpoint``, ``prompt``, ``flip_test``, ``inference``) as in
    :meth:`PartPredictor.from_run`. They apply to this run only: a run loaded from the page decodes
    with its own settings, on the same device."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise WpsSamError('serve needs the app extra: pip install -e ".[app]"') from None
    predictor = PartPredictor.from_run(DEMO_RUN if run is None else run, device, **options)
    app = build_app(PartSegmenter(predictor), bundled_examples())
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, max_file_size=MAX_UPLOAD)
    return app
