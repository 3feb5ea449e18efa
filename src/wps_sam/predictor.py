"""Inference on new images from a trained run, in the manner of segment-anything's ``SamPredictor``:
``predict`` is a numpy shell over ``predict_torch``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .build import build_wps_sam
from .cache import sam_fingerprint
from .config import Config, config_from_dict, config_to_dict, merge, parse_overrides
from .data.transforms import SamTransform
from .engine.loop import encoder_autocast
from .engine.run_dir import WEIGHTS_FILE, load_weights
from .errors import CheckpointError, ConfigError, DataError
from .modeling.wps_sam import WPSSAM
from .postprocess import compose_semantic_map
from .sam.backbones import build_sam
from .sam.decoder import masks_to_frame

DEMO_RUN = "demo"  # what names the shipped demo prompter where a run is expected
DEMO_PROMPTER = "demo_prompter.safetensors"


def shipped_demo_prompter() -> Path:
    """The prompter trained by ``wps-sam demo`` that ships in the package (weights/PRETRAIN_LOG.md)."""
    return Path(str(resources.files("wps_sam") / "weights" / DEMO_PROMPTER))


def prompter_weights(run: str | Path) -> Path:
    """The prompter weights file ``run`` names: a run folder's ``model.safetensors``, a weights file
    itself, or, for ``"demo"`` (when no such path exists), the demo prompter shipped in the package."""
    path = Path(run)
    if path.is_dir():
        return path / WEIGHTS_FILE
    if path.is_file():
        return path
    if str(run) == DEMO_RUN:
        weights = shipped_demo_prompter()
        if not weights.is_file():
            raise CheckpointError(f"the shipped demo prompter is missing from the install: {weights}")
        return weights
    raise CheckpointError(
        f"run not found: {run} (expected a run folder, a prompter weights file such as "
        f"RUN/{WEIGHTS_FILE}, or '{DEMO_RUN}' for the demo prompter shipped in the package)"
    )


@dataclass
class PartInstanceResult:
    """One predicted part, original image frame."""

    class_id: int  # 0..C-1
    class_name: str
    score: float
    box_xyxy: np.ndarray  # (4,) float32, pixels
    mask: np.ndarray  # bool [H, W]


@dataclass
class PartSegmentation:
    label_map: np.ndarray  # [H, W] int32: 0 background, k = part class k-1
    instances: list[PartInstanceResult]


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """[K, H, W] bool -> [K, 4] float32 XYXY pixel boxes (x1, y1 exclusive); zeros for empty masks."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    rows, cols = masks.any(2), masks.any(1)  # [K, H], [K, W]

    def span(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = hits.shape[1]
        first = hits.float().argmax(1)
        last = size - hits.flip(1).float().argmax(1)
        return first, last

    (y0, y1), (x0, x1) = span(rows), span(cols)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return boxes * masks.flatten(1).any(1, keepdim=True)


def _with_prompt(cfg: Config, prompt: str, weights: str | Path) -> Config:
    """``cfg`` decoding with the ``prompt`` head; only a mixed-supervision run has both heads."""
    if cfg.data.supervision == "mixed":
        return dataclasses.replace(cfg, inference=dataclasses.replace(cfg.inference, mixed_prompt=prompt))
    if prompt != cfg.data.supervision:
        kind = cfg.data.supervision
        raise ConfigError(
            f"{weights}: trained from {kind}{'es' if kind == 'box' else 's'}, so it has only a {kind} "
            f"head; choosing the prompt ({prompt}) needs a run trained with --supervision mixed"
        )
    return cfg


def _with_inference(cfg: Config, overrides: list[str], weights: str | Path) -> Config:
    """``cfg`` with dotted ``inference.*`` overrides (``["inference.peak_threshold=0.35"]``), validated as
    any config; the other sections describe how the weights were made and are refused."""
    parsed = parse_overrides(overrides)
    other = sorted(
        f"{section}.{key}" for section in parsed if section != "inference" for key in parsed[section]
    )
    if other:
        raise ConfigError(
            f"{weights}: only inference settings can change after training (inference.KEY=VALUE), got "
            f"{other}; the other sections describe how the weights were made"
        )
    return config_from_dict(merge(config_to_dict(cfg), parsed), f"{weights} + overrides")


class PartPredictor:
    def __init__(
        self,
        model: WPSSAM,
        class_names: list[str],
        cfg: Config,
        device: torch.device,
        sam_fingerprint: str | None = None,
    ) -> None:
        """``sam_fingerprint``: :func:`~wps_sam.cache.sam_fingerprint` of the model's SAM, which keys its
        embeddings in the embedding cache (``None``: not known, nothing is cached)."""
        self.model = model.to(device).eval()
        self.class_names = class_names
        self.cfg = cfg
        self.device = device
        self.sam_fingerprint = sam_fingerprint
        self.transform = SamTransform(model.image_encoder.img_size)

    @classmethod
    def from_run(
        cls,
        run: str | Path,
        device: str = "auto",
        sam_checkpoint: str | None = None,
        prompt: str | None = None,
        flip_test: bool | None = None,
        inference: list[str] | None = None,
    ) -> PartPredictor:
        """Rebuild the model of ``run`` (a run folder, a weights file or ``"demo"``: see
        :func:`prompter_weights`); ``sam_checkpoint`` overrides the recorded SAM path; ``prompt``
        (``"box"`` or ``"point"``) the head a mixed-supervision run decodes with;
        ``flip_test`` turns test-time mirroring on or off (``None``: as the run's config says);
        ``inference`` overrides the run's inference settings (``["inference.peak_threshold=0.35"]``)."""

        weights = prompter_weights(run)
        return cls.from_weights(weights, device, sam_checkpoint, prompt, flip_test, inference)

    @classmethod
    def from_weights(
        cls,
        weights: str | Path,
        device: str = "auto",
        sam_checkpoint: str | None = None,
        prompt: str | None = None,
        flip_test: bool | None = None,
        inference: list[str] | None = None,
    ) -> PartPredictor:
        """The model of a prompter weights file (a run's ``model.safetensors``, which records its
        config); the arguments after ``device`` as in :meth:`from_run`."""
        from .engine.device import resolve_device

        state, class_names, cfg, _ = load_weights(Path(weights))
        if sam_checkpoint is not None:
            cfg = dataclasses.replace(cfg, sam=dataclasses.replace(cfg.sam, checkpoint=sam_checkpoint))
        if prompt is not None:
            cfg = _with_prompt(cfg, prompt, weights)
        overrides = list(inference or [])
        if flip_test is not None:  # after the overrides: the flag wins over inference.flip_test
            overrides.append(f"inference.flip_test={str(flip_test).lower()}")
        if overrides:
            cfg = _with_inference(cfg, overrides, weights)
        sam = build_sam(cfg.sam.type, cfg.sam.checkpoint, sha256=cfg.sam.sha256)
        model = build_wps_sam(cfg, len(class_names), sam)
        try:
            model.prompter.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{weights}: prompter weights do not fit its config ({str(exc).splitlines()[0]})"
            ) from None
        return cls(model, class_names, cfg, resolve_device(device), sam_fingerprint(sam))

    @torch.no_grad()
    def predict_torch(
        self, images: torch.Tensor, original_sizes: list[tuple[int, int]]
    ) -> list[PartSegmentation]:
        """``images``: [B,3,S,S] preprocessed (see :class:`SamTransform`); sizes (H, W) of the originals."""
        return self.decode(
            self.embed(images), original_sizes, mirrored_embeddings=self.embed_mirrored(images)
        )

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] preprocessed images -> [B,256,h,w] float32 SAM embeddings (the costly part)."""
        with encoder_autocast(self.device, self.cfg.train.amp, self.cfg.train.cpu_amp):
            return self.model.embed(images.to(self.device)).float()

    @torch.no_grad()
    def embed_mirrored(self, images: torch.Tensor) -> torch.Tensor | None:
        """The embeddings of the mirrored input frames [B,256,h,w] when the run mirrors at test time
        (``inference.flip_test``: a second encoder pass), else ``None``."""
        if not self.cfg.inference.flip_test:
            return None
        with encoder_autocast(self.device, self.cfg.train.amp, self.cfg.train.cpu_amp):
            return self.model.embed(images.to(self.device), mirrored=True).float()

    @torch.no_grad()
    def decode(
        self,
        embeddings: torch.Tensor,
        original_sizes: list[tuple[int, int]],
        score_threshold: float | None = None,
        mask_probability: float | None = None,
        mirrored_embeddings: torch.Tensor | None = None,
    ) -> list[PartSegmentation]:
        """Parts of images from their embeddings [B,256,h,w], as :meth:`predict` gives them.

        ``score_threshold`` (a class probability) and ``mask_probability`` (a mask pixel's SAM
        probability) override the run's inference settings; a changed threshold costs no encoder pass.
        ``mirrored_embeddings``: :meth:`embed_mirrored` of the same images (test-time mirroring).
        """
        if score_threshold is None:
            score_threshold = self.cfg.inference.score_threshold
        if mirrored_embeddings is not None:
            mirrored_embeddings = mirrored_embeddings.to(self.device)
        predictions = self.model.predict(
            embeddings.to(self.device),
            score_threshold,
            self.cfg.inference.point_multimask,
            mirrored_embeddings=mirrored_embeddings,
        )
        threshold = (
            float(torch.sigmoid(torch.tensor(self.cfg.inference.mask_threshold)))
            if mask_probability is None
            else mask_probability
        )
        results = []
        for pred, size in zip(predictions, original_sizes):
            input_size = self.transform.input_size(size)
            probs = (
                masks_to_frame(pred.mask_logits, self.transform.image_size, input_size, size).sigmoid().cpu()
            )
            label_map = compose_semantic_map(probs, pred.labels.cpu(), pred.scores.cpu(), threshold)
            masks = probs > threshold  # [K, H, W]
            present = masks.flatten(1).any(1)
            boxes = _mask_boxes(masks)
            instances = [
                PartInstanceResult(label, self.class_names[label], score, box, mask)
                for label, score, box, mask, keep in zip(
                    pred.labels.tolist(), pred.scores.tolist(), boxes.numpy(), masks.numpy(), present.tolist()
                )
                if keep
            ]
            results.append(PartSegmentation(label_map.numpy().astype(np.int32), instances))
        return results

    def predict(self, image: np.ndarray) -> PartSegmentation:
        """``image``: uint8 [H, W, 3] RGB -> label map and instances in the image's own frame."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[np.ndarray]) -> list[PartSegmentation]:
        for image in images:
            if not (
                isinstance(image, np.ndarray)
                and image.ndim == 3
                and image.shape[2] == 3
                and image.dtype == np.uint8
            ):
                raise DataError("predict expects uint8 RGB arrays of shape [H, W, 3]")
        batch = torch.stack([self.transform.apply_image(image) for image in images])
        return self.predict_torch(batch, [image.shape[:2] for image in images])
