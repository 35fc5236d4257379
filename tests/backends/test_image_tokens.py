"""agentcpm.images' slicing arithmetic against MiniCPM-V 4.6's real image processor from transformers."""

from __future__ import annotations

import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny_model import PROCESSOR_CONFIG

from agentcpm.errors import ImageError
from agentcpm.images import estimate_image_tokens, fit_for_model, model_image_size, slice_plan

pytest.importorskip("transformers")

CONFIG = {k: v for k, v in PROCESSOR_CONFIG["image_processor"].items() if k != "image_processor_type"}
MODES = ("16x", "4x")


@pytest.fixture(scope="module")
def processor():
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil

    return MiniCPMV4_6ImageProcessorPil(**CONFIG)


def processor_tokens(processor, width: int, height: int, max_slice_nums: int, mode: str) -> tuple[int, list]:
    """Run the real image processor, then the real MiniCPMV4_6Processor placeholder code, and count."""
    from transformers.models.minicpmv4_6.processing_minicpmv4_6 import MiniCPMV4_6Processor

    out = processor(
        Image.new("RGB", (width, height), (90, 120, 200)), max_slice_nums=max_slice_nums, downsample_mode=mode
    )
    # replace_image_token reads only these attributes; its tokenizer-free instance stands in for the full processor.
    tokens = types.SimpleNamespace(
        image_start_token="<image>",
        image_end_token="</image>",
        image_token="<|image_pad|>",
        slice_start_token="<slice>",
        slice_end_token="</slice>",
        slice_mode=True,
    )
    text = MiniCPMV4_6Processor.replace_image_token(
        tokens, out, image_idx=0, image_token_divisor=4 if mode == "4x" else 16
    )
    return text.count("<|image_pad|>"), list(out["grids"][0])


def test_the_facts_note_figures():
    assert estimate_image_tokens(1920, 1080, max_slice_nums=36) == 822
    assert estimate_image_tokens(1920, 1080, max_slice_nums=36, downsample_mode="4x") == 3276
    assert estimate_image_tokens(640, 480) == 203


SIZES = [
    (1, 1),
    (13, 7),
    (56, 56),
    (300, 200),
    (447, 448),
    (448, 448),
    (449, 448),
    (640, 480),
    (800, 600),
    (1000, 30),
    (30, 1000),
    (100, 3000),
    (1024, 768),
    (1280, 720),
    (1366, 768),
    (1920, 1080),
    (1080, 1920),
    (2560, 1440),
    (3000, 100),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_exact_count_through_the_real_processor(processor, width, height, mode):
    slices = 36 if width * height > 2_000_000 else 9
    expected, grid = processor_tokens(processor, width, height, slices, mode)
    plan = slice_plan(width, height, slices, mode)
    assert estimate_image_tokens(width, height, slices, mode) == expected
    assert list(plan.grid or (0, 0)) == grid


@pytest.mark.parametrize("slices", [1, 2, 4, 9, 16, 36])
def test_slice_limits_through_the_real_processor(processor, slices):
    for mode in MODES:
        expected, grid = processor_tokens(processor, 1700, 900, slices, mode)
        assert estimate_image_tokens(1700, 900, slices, mode) == expected
        assert max(1, grid[0] * grid[1]) <= slices


@settings(max_examples=400, deadline=None)
@given(
    width=st.integers(1, 8000),
    height=st.integers(1, 8000),
    slices=st.sampled_from([1, 2, 3, 6, 9, 12, 25, 36, 64]),
    mode=st.sampled_from(MODES),
)
def test_plan_matches_the_processor_planning_methods(processor, width, height, slices, mode):
    """Many sizes, cheaply: the processor's own grid/resize methods, combined as its _preprocess does."""
    grid = processor.get_sliced_grid((height, width), slices, 448)
    thumb_h, thumb_w = processor.find_best_resize((height, width), 448, 14, mode, allow_upscale=grid is None)
    divisor = 4 if mode == "4x" else 16
    expected = (thumb_h // 14) * (thumb_w // 14) // divisor
    plan = slice_plan(width, height, slices, mode)
    if grid is not None:
        refine_h, refine_w = processor.get_refine_size((height, width), grid, 448, 14, mode, allow_upscale=True)
        piece_h, piece_w = refine_h // grid[0], refine_w // grid[1]
        expected += grid[0] * grid[1] * ((piece_h // 14) * (piece_w // 14) // divisor)
        assert plan.size == (refine_w, refine_h)
    assert plan.grid == (tuple(grid) if grid else None)
    assert plan.thumbnail == (thumb_w, thumb_h)
    assert plan.tokens == expected


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 8000),
    height=st.integers(1, 8000),
    slices=st.sampled_from([1, 4, 9, 16, 36]),
    mode=st.sampled_from(MODES),
)
def test_model_image_size_loses_nothing(width, height, slices, mode):
    size = model_image_size(width, height, slices, mode)
    assert size[0] <= width and size[1] <= height
    # The model sees the same grid, slice sizes and token count from the smaller image...
    assert slice_plan(*size, slices, mode) == slice_plan(width, height, slices, mode)
    # ...never needs to upscale it in either direction...
    target = slice_plan(width, height, slices, mode).size
    assert size == (width, height) or (size[0] >= target[0] and size[1] >= target[1])
    # ...and resizing again changes nothing (the remote backend calls fit_for_model on what we send).
    assert model_image_size(*size, slices, mode) == size


def test_screens_shrink_to_the_model_size():
    assert model_image_size(1920, 1080) == (1792, 1008)  # 2x4 slices at 9 slices
    assert model_image_size(2560, 1440) == (1792, 1008)
    assert model_image_size(1920, 1080, 36) == (1920, 1080)  # the model upscales to 2016x1176: send as is
    assert model_image_size(3840, 2160, 36) == (3584, 2016)
    assert model_image_size(640, 480) == (640, 480)


def test_fit_for_model_resizes_once_and_never_upscales():
    big = Image.new("RGB", (2560, 1440), "white")
    fitted = fit_for_model(big)
    assert fitted.size == (1792, 1008)
    assert fit_for_model(fitted) is fitted
    small = Image.new("RGB", (320, 200))
    assert fit_for_model(small) is small
    assert fit_for_model(big, max_slice_nums=1).size == model_image_size(2560, 1440, 1)


def test_bad_sizes_raise_a_typed_error():
    with pytest.raises(ImageError):
        estimate_image_tokens(0, 100)


@pytest.mark.parametrize("mode", MODES)
def test_exact_count_through_the_tiny_models_full_processor(tiny_processor, mode):
    """The whole MiniCPMV4_6Processor (tokenizer included), as the local backend loads it: count the
    ``<|image_pad|>`` ids in the prompt it builds around one image."""
    image_token_id = tiny_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for width, height, slices in [(640, 480, 9), (1920, 1080, 36), (1000, 30, 9), (1366, 768, 4)]:
        inputs = tiny_processor(
            text=["Describe <|image_pad|> please."],
            images=[Image.new("RGB", (width, height), "white")],
            max_slice_nums=slices,
            downsample_mode=mode,
            return_tensors=None,
        )
        counted = list(inputs["input_ids"][0]).count(image_token_id)
        assert counted == estimate_image_tokens(width, height, slices, mode), (width, height, slices, mode)
