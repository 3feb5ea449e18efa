"""WPS-SAM as one ONNX graph: image embedding -> every query's part class, score and SAM mask logits.

segment-anything exports SAM's mask decoder alone (prompts in, masks out); a WPS-SAM deployment needs
the prompter in front of it. :class:`PartDecoderGraph` is that composite with a fixed number of
queries Q, so the graph has no data-dependent shapes: every query is decoded, and the consumer keeps
those whose label is not -1 ("no part") and whose score reaches its threshold, which is exactly
:func:`wps_sam.postprocess.select_queries`. The run's class names are in the file's metadata
(``class_names``, a JSON list). The graph starts from SAM's image embedding; run the
SAM image encoder before it (segment-anything's own export, or the encoder exported here with
:func:`export_image_encoder`).

Inputs and outputs (dynamic batch B; h, w the embedding grid, 64 for the official SAMs):

* ``image_embeddings`` float32 [B, 256, h, w];
* ``labels`` int64 [B, Q]: the part class, or -1 for "no part"; ``scores`` float32 [B, Q] (softmax
  probability of the predicted class, "no part" included),
  ``low_res_masks`` float32 [B, Q, 4h, 4w] (SAM's mask logits in the padded input frame: upscale to
  the input side S, crop the resized image, resize to the original, threshold at 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from .modeling.wps_sam import WPSSAM, best_rated_masks
from .sam.decoder import PromptMaskDecoder

INPUT_NAMES = ["image_embeddings"]
OUTPUT_NAMES = ["labels", "scores", "low_res_masks"]


class PartDecoderGraph(nn.Module):
    """The prompter and SAM's mask decoder of ``model``, every query decoded.

    ``point_multimask``: for point prompters, SAM's three masks per query and the one its IoU head
    rates best (as ``WPSSAM.predict`` with ``point_multimask``); otherwise the single mask.
    """

    def __init__(self, model: WPSSAM, point_multimask: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.multimask = point_multimask and model.decodes_points
        # SAM's decoder in one call: the graph's number of prompts follows its dynamic batch.
        self.decoder = PromptMaskDecoder(
            model.decoder.prompt_encoder, model.decoder.mask_decoder, cpu_prompts_per_call=None
        )

    def forward(self, image_embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.model(image_embeddings)
        logits = outputs["pred_logits"]
        _, labels = logits.max(-1)
        scores = logits.float().softmax(-1).gather(-1, labels[..., None])[..., 0]
        labels = torch.where(labels == logits.shape[-1] - 1, torch.full_like(labels, -1), labels)
        masks, iou_pred = self.decoder(
            image_embeddings, outputs["pred_tokens"], multimask_output=self.multimask
        )
        if self.multimask:
            masks = best_rated_masks(masks, iou_pred)
        return labels, scores, masks.float()


def export_onnx(
    model: WPSSAM,
    path: str | Path,
    class_names: list[str],
    point_multimask: bool = False,
    opset: int = 18,
) -> Path:
    """Write :class:`PartDecoderGraph` of ``model`` (moved to the CPU, float32) to ``path``; dynamic batch;
    ``class_names`` go into the file's metadata.

    Needs the ``onnx`` extra (onnx, onnxscript: ``pip install -e ".[onnx]"``).
    """
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {model.num_classes} classes")
    graph = PartDecoderGraph(model.cpu().float(), point_multimask).eval()
    h, w = model.teacher.prompt_encoder.image_embedding_size
    example = torch.zeros(2, model.teacher.prompt_encoder.embed_dim, h, w)
    path = _export(graph, example, path, INPUT_NAMES, OUTPUT_NAMES, opset)
    _set_metadata(path, {"class_names": json.dumps(class_names), "producer": "wps-sam"})
    return path


def _set_metadata(path: Path, entries: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def export_image_encoder(model: WPSSAM, path: str | Path, opset: int = 18) -> Path:
    """Write SAM's image encoder of ``model`` ([B, 3, S, S] normalised, padded -> [B, 256, h, w])."""
    encoder = model.image_encoder.cpu().float().eval()
    size = int(encoder.img_size)
    return _export(encoder, torch.zeros(1, 3, size, size), path, ["images"], ["image_embeddings"], opset)


def _export(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: str | Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> Path:
    """``module`` (one tensor in) as an ONNX file at ``path``, its first dimension dynamic (the batch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path))
    return path
