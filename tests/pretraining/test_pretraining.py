"""Properties of the tiny-SAM pre-training: losses, prompts, batches, object labels, and short runs."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch

from wps_sam.pretraining import (
    BatchConfig,
    PretrainConfig,
    evaluate_prompted_miou,
    pretrain_tiny_sam,
    trainer,
)
from wps_sam.pretraining.data import PretrainBatches
from wps_sam.pretraining.knowledge import ObjectClassifierHead, ObjectLabelledScenes
from wps_sam.pretraining.losses import dice_loss, mask_iou, sigmoid_focal_loss
from wps_sam.pretraining.objective import (
    MaskLossWeights,
    MaskRecipe,
    correction_prompt,
    images_to_input,
    mask_objective,
    predict_masks_batched,
    prompt_frame,
)
from wps_sam.pretraining.prompts import PromptConfig, interior_point, mask_box, sample_prompts
from wps_sam.pretraining.trainer import new_sam
from wps_sam.sam.backbones import build_sam, tiny_sam_architecture
from wps_sam.synthetic.scenes import SyntheticShapes
from wps_sam.synthetic.toyparts import SUPERCATEGORIES, ToyPartsConfig, render_scene


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_random_sam():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam("tiny", checkpoint="random")


def test_focal_and_dice_match_hand_values():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.5]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    p = torch.sigmoid(logits)
    # Focal per pixel: alpha_t (1 - p_t)^2 (-log p_t), alpha_t = 0.25 on positives, 0.75 on negatives.
    p_t = torch.where(target > 0, p, 1 - p)
    alpha_t = torch.where(target > 0, 0.25, 0.75)
    expected = (alpha_t * (1 - p_t) ** 2 * -torch.log(p_t)).mean()
    assert torch.allclose(sigmoid_focal_loss(logits, target), expected[None], atol=1e-6)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert torch.allclose(dice_loss(logits, target), dice[None], atol=1e-6)
    assert math.isclose(mask_iou(logits, target).item(), 1 / 3, rel_tol=1e-6)  # pred {1,3}, gt {0,1}


def test_prompts_lie_in_their_masks():
    rng = np.random.default_rng(0)
    _, masks = SyntheticShapes(seed=1)[0]
    p = sample_prompts(rng, masks, 6, PromptConfig(p_box=0.5), n_points=3)
    for j, t in enumerate(p["target"]):
        x, y = p["coords"][j, 0].astype(int)
        assert masks[t][y, x]  # the first point is always positive
        for (x, y), label in zip(p["coords"][j].astype(int), p["labels"][j]):
            assert masks[t][y, x] == bool(label)
    box = mask_box(masks[0])
    ys, xs = np.nonzero(masks[0])
    assert list(box) == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_interior_point_is_the_innermost_pixel():
    mask = np.zeros((20, 40), bool)
    mask[2:9, 3:30] = True  # a bar 7 rows high: its middle row is row 5
    mask[2:19, 32:35] = True  # a thin post: never the farthest from an outline
    x, y = interior_point(mask)
    assert y == 5 and 3 + 3 <= x <= 29 - 3


def test_batched_decoder_matches_segment_anything():
    sam = _tiny_random_sam()
    emb = torch.randn(2, 256, 32, 32)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 60.0, 200.0, 210.0]])
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    with torch.no_grad():
        masks, iou = predict_masks_batched(sam, emb[[0, 1]], sparse, dense)
        for i in range(2):
            ref_m, ref_iou = sam.mask_decoder.predict_masks(
                emb[i : i + 1], sam.prompt_encoder.get_dense_pe(), sparse[i : i + 1], dense[i : i + 1]
            )
            assert torch.allclose(masks[i : i + 1], ref_m, atol=1e-4)
            assert torch.allclose(iou[i : i + 1], ref_iou, atol=1e-5)


def test_prompt_frame_sets_and_restores_the_frame():
    pe = _tiny_random_sam().prompt_encoder
    with prompt_frame(pe, 128, 16):
        assert pe.get_dense_pe().shape[-2:] == (16, 16)
        _, dense = pe(points=None, boxes=torch.tensor([[1.0, 2.0, 30.0, 40.0]]), masks=None)
        assert dense.shape[-2:] == (16, 16)
    assert pe.input_image_size == (256, 256) and pe.get_dense_pe().shape[-2:] == (32, 32)


def test_batches_are_a_function_of_the_step_and_follow_the_curriculum():
    cfg = BatchConfig(
        steps=4,
        batch_size=2,
        prompts_per_image=3,
        low_res_steps=2,
        low_res_prompts_per_image=5,
        object_batch_size=2,
    )
    batches = PretrainBatches(cfg)
    low, again, full = batches[1], PretrainBatches(cfg)[1], batches[2]
    for k in low:
        assert torch.equal(low[k], again[k])
    assert low["images"].shape == (2, 128, 128, 3) and low["targets"].shape == (10, 64, 64)
    assert full["images"].shape == (2, 256, 256, 3) and full["targets"].shape == (6, 128, 128)
    assert full["object_images"].shape == (2, 256, 256, 3) and full["object_labels"].shape == (2, 11)
    assert 0 <= float(full["targets"].min()) and float(full["targets"].max()) <= 1
    assert (full["box"] >= 0).all() and (full["box"] <= 255).all()


def test_object_labels_name_only_the_objects_shown():
    scenes = ObjectLabelledScenes(seed=0)
    for i in range(5):
        image, labels = scenes[i]
        scene = render_scene(ToyPartsConfig(seed=0), "pretrain", i)
        drawn = {name.split(" ")[0] for _, name in scene.parts}
        shown = {list(SUPERCATEGORIES)[k] for k in np.flatnonzero(labels)}
        assert image.shape == (256, 256, 3) and shown and shown <= drawn
    head = ObjectClassifierHead(256, 11)
    assert head(torch.randn(3, 256, 8, 8)).shape == (3, 11)


def test_evaluation_runs_on_any_size():
    sam = _tiny_random_sam()
    image = np.zeros((120, 200, 3), np.uint8)
    masks = np.zeros((2, 120, 200), bool)
    masks[0, 10:50, 20:90] = True
    res = evaluate_prompted_miou(sam, [image], [masks])  # the empty mask is skipped
    assert res["n_masks"] == 1 and 0 <= res["box_miou"] <= 1 and 0 <= res["point_miou"] <= 1


def _smoke_config(steps: int) -> PretrainConfig:
    batches = BatchConfig(
        steps=steps,
        batch_size=2,
        prompts_per_image=2,
        low_res_steps=2,
        low_res_prompts_per_image=2,
        object_batch_size=2,
    )
    return PretrainConfig(
        batches=batches,
        warmup_steps=1,
        log_every=1,
        eval_every=2,
        eval_images=1,
        eval_masks_per_image=2,
        box_warmup_steps=2,
        loader_workers=0,
    )


def _killed_then_resumed(monkeypatch, out, first_device: str = "cpu"):
    """A 4-step smoke run in ``out`` killed in its third step on ``first_device`` (a state is saved
    after every step), then resumed to the end on the CPU; the weights' path."""
    real_step, calls = trainer._train_step, []

    def killed_at_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    cfg = dataclasses.replace(_smoke_config(4), checkpoint_every_s=0.0)
    monkeypatch.setattr(trainer, "_train_step", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        pretrain_tiny_sam(out, cfg, progress=False, device=first_device)
    monkeypatch.setattr(trainer, "_train_step", real_step)
    return pretrain_tiny_sam(out, cfg, progress=False, device="cpu")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:SAM tiny has random weights")
def test_every_stage_runs_and_a_resumed_run_is_exact(tmp_path, monkeypatch):
    # Box warm-up, two low-resolution steps, two full-resolution steps.
    path = pretrain_tiny_sam(tmp_path / "whole", _smoke_config(4), progress=False)
    assert path.is_file() and path.stat().st_size <= 25 * 1024 * 1024
    sam = build_sam("tiny", checkpoint=path)
    assert sam.checkpoint_sha256 != "random"
    rows = [json.loads(line) for line in (tmp_path / "whole" / "pretrain_log.jsonl").read_text().splitlines()]
    assert rows[0]["box_warmup_steps"] == 2
    assert [r["res"] for r in rows if "loss" in r] == [128, 128, 256, 256]
    assert all("loss_objects" in r for r in rows if "loss" in r)
    assert any("eval_box_miou" in r for r in rows)
    # Killed after two steps, then resumed: the same weights.
    resumed = _killed_then_resumed(monkeypatch, tmp_path / "killed")
    whole, parts = build_sam("tiny", checkpoint=path), build_sam("tiny", checkpoint=resumed)
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_run_trains_on_the_gpu_and_resumes_on_the_cpu(tmp_path, monkeypatch):
    """The batches are drawn on the CPU, so a run stopped on the GPU goes on from its state on the CPU."""
    path = _killed_then_resumed(monkeypatch, tmp_path / "run", first_device="cuda")
    rows = [json.loads(line) for line in (tmp_path / "run" / "pretrain_log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["res"] for r in steps] == [128, 128, 256, 256]
    assert all(math.isfinite(r["loss"]) for r in steps)
    assert build_sam("tiny", checkpoint=path).checkpoint_sha256 != "random"


def test_a_coarser_embedding_is_the_same_encoder_pooled():
    fine, coarse = tiny_sam_architecture(), tiny_sam_architecture(embed_stride=16)
    coarse.load_state_dict(fine.state_dict())  # pooling adds no weights
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        a, b = fine.image_encoder(x), coarse.image_encoder(x)
    assert a.shape == (1, 256, 32, 32) and b.shape == (1, 256, 16, 16)
    assert tuple(coarse.prompt_encoder.image_embedding_size) == (16, 16)
    with pytest.raises(ValueError, match="embed_stride"):
        tiny_sam_architecture(embed_stride=4)


@pytest.mark.parametrize(
    "change",
    [
        {"embed_stride": 16},
        {
            "encoder": "vit_mini",
            "batches": BatchConfig(steps=2, batch_size=2, prompts_per_image=2, object_batch_size=0),
        },
    ],
    ids=["embed-16x16", "vit-mini"],
)
def test_ablation_architectures_pretrain(tmp_path, change):
    cfg = dataclasses.replace(_smoke_config(2), **change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain_tiny_sam(tmp_path, cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "pretrain_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(rows[-1]["eval_box_miou"])


def test_unknown_encoder_and_init_of_an_ablation_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown encoder"):
        new_sam(dataclasses.replace(_smoke_config(1), encoder="resnet"))
    with pytest.raises(ValueError, match="default encoder"):
        new_sam(dataclasses.replace(_smoke_config(1), embed_stride=16), init=str(tmp_path / "w.safetensors"))


def test_the_scene_distribution_is_a_batch_switch():
    plain = BatchConfig(steps=1, batch_size=2, object_batch_size=0)
    without = dataclasses.replace(plain, shapes=dataclasses.replace(plain.shapes, p_assembly=0.0))
    assert not torch.equal(PretrainBatches(plain)[0]["images"], PretrainBatches(without)[0]["images"])
    with pytest.raises(ValueError, match="256 px"):
        PretrainBatches(dataclasses.replace(plain, shapes=dataclasses.replace(plain.shapes, size=128)))


def test_a_correction_click_goes_to_the_larger_error_region():
    target = torch.zeros(3, 16, 16)
    target[:, 4:12, 4:12] = 1.0
    logits = torch.full((3, 16, 16), -5.0)
    logits[0, 4:12, 4:8] = 5.0  # the right half missed: a positive click there
    logits[1, 2:14, 2:14] = 5.0  # a thick spill around the target: a negative click in it
    logits[2][target[2] > 0] = 5.0  # no error: a padding click
    prompt = {"boxes": torch.zeros(3, 4), "points": None, "masks": None}
    out = correction_prompt(prompt, logits, target, frame=64)  # 4 px of the frame per logit cell
    coords, labels = out["points"]
    assert labels[:, 0].tolist() == [1, 0, -1]
    x, y = coords[0, 0].tolist()
    assert 8 * 4 <= x + 0.5 <= 12 * 4 and 4 * 4 <= y + 0.5 <= 12 * 4  # inside the missed half
    assert out["masks"].shape == (3, 1, 16, 16) and out["boxes"] is prompt["boxes"]
    again = correction_prompt(out, logits, target, frame=64)
    assert again["points"][0].shape == (3, 2, 2)  # clicks accumulate


@pytest.mark.parametrize(
    "recipe",
    [MaskRecipe(multimask=False), MaskRecipe(correction_clicks=2)],
    ids=["single-mask", "corrections"],
)
def test_objective_switches_train(recipe):
    sam = new_sam(_smoke_config(1))
    batch = PretrainBatches(BatchConfig(steps=1, batch_size=2, prompts_per_image=4, object_batch_size=0))[0]
    size = batch["images"].shape[1]
    with prompt_frame(sam.prompt_encoder, size, size // 8):
        embeddings = sam.image_encoder(images_to_input(sam, list(batch["images"].numpy())))
        terms = mask_objective(sam, embeddings, batch, MaskLossWeights(), recipe)
    terms["loss"].backward()
    assert math.isfinite(terms["loss"].item())
    if recipe.correction_clicks:  # the mask prompt is trained through the later rounds
        assert sam.prompt_encoder.mask_downscaling[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("bf16", "device", "native", "dtype"),
    [
        (True, "cpu", False, None),
        (True, "cpu", True, torch.bfloat16),
        (False, "cpu", True, None),
        (True, "cuda", False, torch.bfloat16),
        (False, "cuda", False, None),
    ],
)
def test_bf16_only_where_it_pays(monkeypatch, bf16, device, native, dtype):
    """On a CPU without native bf16, autocast is emulated and ~10x slower than float32."""
    import wps_sam.engine.device

    monkeypatch.setattr(wps_sam.engine.device, "cpu_has_native_bf16", lambda: native)
    assert trainer.autocast_dtype(bf16, torch.device(device)) is dtype


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_pretrain_sam_on_a_missing_gpu_is_one_line(tmp_path, capsys):
    from wps_sam.cli import main

    assert main(["pretrain-sam", "--out", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err
