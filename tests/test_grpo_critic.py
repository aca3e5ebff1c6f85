"""Critics: the paper's critic prompt (appendix B.2), the chat-template and InternVL paths, the rule
critic, and one-line errors for missing models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from coz.errors import CozError
from coz.run.cli import quote_null_choices, tool_config_dir
from coz.train_grpo.critic import (
    CRITIC_PROMPT,
    ChatTemplateCritic,
    InternVLCritic,
    KeywordCritic,
    build_critic,
    internvl_tiles,
)


def compose_grpo(overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir("train_grpo"), version_base="1.3"):
        return compose(config_name="train_grpo", overrides=quote_null_choices(overrides))


@pytest.fixture(scope="module")
def views() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(4)]


def test_the_critic_prompt_is_the_papers():
    assert CRITIC_PROMPT.format(description="fur") == (
        "First Image: <image>\nSecond Image: <image>\n"
        "The second image is a zoom-in of the first image. Please rate the quality of the following "
        "description on how well it describes the second image. Output only a single score between 0 "
        "and 100.\nDescription: fur\nRating (0-100):"
    )


def test_chat_template_critic_renders_both_views_in_order_and_answers(views):
    critic = build_critic(compose_grpo(["critic=tiny"]).critic, "cpu")
    assert isinstance(critic, ChatTemplateCritic)
    texts, images = critic.render(["dog, stick"], [views[0]], [views[1]])
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    assert texts[0].endswith(
        f"<|im_start|>user\nFirst Image: {pad}\nSecond Image: {pad}\nThe second image is a zoom-in of the first "
        "image. Please rate the quality of the following description on how well it describes the second "
        "image. Output only a single score between 0 and 100.\nDescription: dog, stick\nRating (0-100):"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert images == [views[0], views[1]]
    answers = critic.answer(["a", "b", "c"], views[:3], views[1:4])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert critic.answer(["a"], views[:1], views[1:2]) == answers[:1]  # greedy, batch-independent


def test_internvl_critic_asks_model_chat_with_both_views():
    calls = []

    class FakeInternVL(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def chat(self, tokenizer, pixel_values, question, generation_config, num_patches_list):
            calls.append((pixel_values, question, generation_config, num_patches_list))
            return "Rating: 77"

    white, black = Image.new("RGB", (512, 512), "white"), Image.new("RGB", (512, 512), "black")
    critic = InternVLCritic(FakeInternVL(), tokenizer=None, max_new_tokens=8)
    assert critic.answer(["fur"], [white], [black]) == ["Rating: 77"]
    pixels, question, generation, patches = calls[0]
    assert question == CRITIC_PROMPT.format(description="fur") and question.count("<image>") == 2
    assert patches == [1, 1] and pixels.shape == (2, 3, 448, 448)  # a 512 view is one 448 tile
    assert generation["do_sample"] is False and generation["max_new_tokens"] == 8
    torch.testing.assert_close(
        pixels[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    )


def test_internvl_tiling():
    assert len(internvl_tiles(Image.new("RGB", (512, 512)))) == 1
    wide = internvl_tiles(Image.new("RGB", (1800, 900)))  # 2:1 -> a 2x1 grid... or 4x2 with the pixels
    assert all(t.size == (448, 448) for t in wide) and len(wide) in (3, 9)
    assert len(internvl_tiles(Image.new("RGB", (896, 448)))) == 3  # 2 tiles and the thumbnail


def test_keyword_critic():
    critic = build_critic(compose_grpo(["critic=keyword", "critic.words=[Fur,feather]"]).critic, "cpu")
    assert isinstance(critic, KeywordCritic)
    assert critic.answer(["orange FUR", "sky", "feathers"], [None] * 3, [None] * 3) == ["100", "0", "100"]
    with pytest.raises(CozError, match="critic.words"):
        build_critic(compose_grpo(["critic=keyword"]).critic, "cpu")


@pytest.mark.parametrize(
    "critic, model", [("internvl", "OpenGVLab/InternVL2_5-8B"), ("qwen7b", "Qwen/Qwen2.5-VL-7B-Instruct")]
)
def test_a_missing_critic_is_one_clear_error_without_network(
    critic, model, monkeypatch, tmp_path, no_network
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = compose_grpo([f"critic={critic}"]).critic
    with pytest.raises(CozError) as err:
        build_critic(cfg, "cpu")
    assert no_network == []  # failed at once, offline: no connection tried
    message = str(err.value)
    assert (
        model in message and "hf download" in message and "critic.model=" in message and "\n" not in message
    )
    cfg.model = str(tmp_path / "nowhere")
    with pytest.raises(CozError, match="no such folder"):
        build_critic(cfg, "cpu")


def test_internvl_remote_code_runs_only_behind_a_pinned_revision(tmp_path):
    cfg = compose_grpo(["critic=internvl"]).critic
    assert len(str(cfg.revision)) == 40 and cfg.trust_remote_code  # the default is a pinned commit
    cfg.revision = None
    with pytest.raises(CozError, match="critic.revision: unset") as err:
        build_critic(cfg, "cpu")
    assert "\n" not in str(err.value)
