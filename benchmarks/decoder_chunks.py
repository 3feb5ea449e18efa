"""SAM's mask decoder on the CPU: prompts decoded in one call against calls of a few prompts each.

:class:`~wps_sam.sam.decoder.PromptMaskDecoder` gives every prompt its own copy of its image's
embedding in the two-way transformer, so one call over many prompts moves [prompts, h*w, 256]
activations; on the CPU it decodes in calls of at most ``CPU_PROMPTS_PER_CALL`` prompts. This times
the shipped tiny SAM's decoder on 64 box prompts over 8 images (the size of one evaluation batch of
the demo), in one call and in calls of 32, 16, 8 and 4 prompts, alternating, twice each, and checks
that every way gives the one-call values:

    python benchmarks/decoder_chunks.py [--repeats 3]

prints one JSON object: milliseconds per prompt for each call size, and the largest difference of
the mask logits from the one-call decode.
"""

from __future__ import annotations

import argparse
import json

import torch

from wps_sam.bench import mean_ms
from wps_sam.sam.backbones import build_sam, shipped_tiny_weights
from wps_sam.sam.decoder import CPU_PROMPTS_PER_CALL, PromptMaskDecoder
from wps_sam.sam.teacher import TeacherTokens

IMAGES, PROMPTS_PER_IMAGE = 8, 8
CALL_SIZES = (IMAGES * PROMPTS_PER_IMAGE, 32, 16, 8, 4)


def _inputs(sam) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [8, 256, h, w] of random images and the tokens [8, 8, 2, 256] of random boxes."""
    g = torch.Generator().manual_seed(0)
    side = sam.image_encoder.img_size
    with torch.no_grad():
        embeddings = sam.image_encoder(torch.randn(IMAGES, 3, side, side, generator=g))
        corners = torch.rand(IMAGES * PROMPTS_PER_IMAGE, 2, generator=g) * 0.7 * side
        sizes = torch.rand(IMAGES * PROMPTS_PER_IMAGE, 2, generator=g) * 0.25 * side + 8
        tokens = TeacherTokens(sam.prompt_encoder)(boxes=torch.cat([corners, corners + sizes], 1))
    return embeddings, tokens.reshape(IMAGES, PROMPTS_PER_IMAGE, *tokens.shape[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="decodes timed per measurement")
    args = parser.parse_args()
    sam = build_sam("tiny", shipped_tiny_weights())
    decoder = PromptMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
    embeddings, tokens = _inputs(sam)
    prompts = IMAGES * PROMPTS_PER_IMAGE
    ms: dict[int, list[float]] = {size: [] for size in CALL_SIZES}
    differences: dict[int, float] = {}
    with torch.no_grad():
        decoder.cpu_prompts_per_call = prompts
        reference = decoder(embeddings, tokens)[0]
        for _ in range(2):
            for size in CALL_SIZES:
                decoder.cpu_prompts_per_call = size
                per_call = mean_ms(lambda: decoder(embeddings, tokens), args.repeats, warmup=1)
                ms[size].append(per_call / prompts)
                differences[size] = float((decoder(embeddings, tokens)[0] - reference).abs().max())
    result = {
        "threads": torch.get_num_threads(),
        "prompts": prompts,
        "default_prompts_per_call": CPU_PROMPTS_PER_CALL,
        "ms_per_prompt": {str(size): [round(v, 2) for v in values] for size, values in ms.items()},
        "max_abs_difference": {str(size): d for size, d in differences.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
