"""``wps-sam bench``: training and inference throughput of WPS-SAM against the official recipe.

On the current device, in one run and with the same random weights:

* **train**: a whole K-epoch run over N images, (a) the reference, which follows the official
  WPS-SAM recipe: SAM's image encoder (segment-anything's attention, float32 in PyTorch's default
  precision: float32 matmuls, TF32 cuDNN convolutions; ``reference_tf32`` allows TF32 matmuls) in
  every step, then a per-image Python loop for the teacher tokens, the matching and the loss; and
  (b) ours: build the embedding cache once (fast encoder, bf16 on CUDA, written to disk and made
  resident), then K epochs of :func:`~wps_sam.engine.loop.train_step` reading it. The reference is
  timed for a few steps and extrapolated (``reference_measured_steps``); ours runs in full when that
  takes at most ``full_run_budget_s`` and is extrapolated otherwise (``train_measured_steps``).
  Images arrive preprocessed in both (a data loader's workers hide that cost in real runs).
* **encoder**: images/s of the fast encoder (batch ``batch_size``; bf16 and ``torch.compile`` on
  CUDA, warm-up excluded) and its relative error against the official float32 encoder (TF32 off).
* **predict**: images/s end to end through :class:`~wps_sam.predictor.PartPredictor`: uint8 images
  resized and normalised (4 threads, one batch ahead), encoder, prompter, mask decoder and the
  masks, label map and instances in each image's own frame.

Weights are random (``"weights": "random"``): speed does not depend on them; the relative-position
tables, zero at SAM's initialisation, are drawn with std ``REL_POS_STD`` so that the bias counts in
the error. The result goes to ``out_dir/<device>-<sam-type>-<YYYY-MM-DD>.json``.
"""

from .report import format_ratios, format_table
from .runner import RESULT_KEYS, run_benchmark
from .timing import mean_ms

__all__ = ["RESULT_KEYS", "format_ratios", "format_table", "mean_ms", "run_benchmark"]
