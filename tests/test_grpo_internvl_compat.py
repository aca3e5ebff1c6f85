"""The InternVL2.5 shim (``coz.train_grpo.internvl_compat``) on a tiny stand-in written in the style of the hub's
remote code (InternVLChatModel around InternLM2ForCausalLM, written for transformers 4.3x-4.4x).

The stand-in is ours, not InternVL's: it only shares the traits the shim works around. A chat model whose
``__init__`` skips ``post_init()``; a causal LM that subclasses ``PreTrainedModel`` alone (no
``GenerationMixin``), keeps a legacy ``((k, v), ...)`` tuple cache and has a 4.x-style
``prepare_inputs_for_generation``; InternLM2-style rotary embeddings whose tables are non-persistent
buffers. The canary tests pin down that each problem exists under the installed transformers, so a
transformers upgrade that makes a fix unnecessary (or a shim that stops fixing it) shows up here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import load_file

from coz.train_grpo import internvl_compat
from coz.train_grpo.internvl_compat import load_legacy, make_generative, restore_rotary_tables

if TYPE_CHECKING:
    from internvl_legacy_standin import LegacyCausalLM, LegacyChat, LegacyRotaryEmbedding

# The stand-in (transformers-4.x-era remote code, in miniature) is in tests/internvl_legacy_standin.py,
# imported by the tests that use it: collecting this file must not import transformers.

PROMPT = [[5, 17, 3, 42, 8, 8, 30, 1, 60, 12]]
NEW_TOKENS = 8


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved stand-in: (folder, its tensors as written)."""
    from internvl_legacy_standin import LegacyChat, LegacyConfig

    folder = tmp_path_factory.mktemp("legacy_chat")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LegacyChat(LegacyConfig()).save_pretrained(folder)
    return folder, load_file(folder / "model.safetensors")


def eager_reference(checkpoint) -> LegacyChat:
    """The ground truth: built eagerly (no meta device, so ``__init__`` computes the rotary tables), then
    loaded with a strict ``load_state_dict`` of the saved tensors."""
    from internvl_legacy_standin import LegacyChat, LegacyConfig

    folder, tensors = checkpoint
    model = LegacyChat(LegacyConfig.from_pretrained(folder))
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def greedy_without_cache(language_model, prompt: list[int], steps: int = NEW_TOKENS) -> list[int]:
    """Full forward over the whole sequence per step: no cache and no generate() machinery to trust."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = language_model(input_ids=torch.tensor([tokens]), use_cache=False).logits
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def rotaries(model) -> list[LegacyRotaryEmbedding]:
    from internvl_legacy_standin import LegacyRotaryEmbedding

    return [m for m in model.modules() if isinstance(m, LegacyRotaryEmbedding)]


def partly_fixed(language_model: LegacyCausalLM, attributes: dict) -> LegacyCausalLM:
    """What ``make_generative`` does (``GenerationMixin`` and a generation config), with only the
    given class ``attributes`` of its remaining fixes."""
    from internvl_legacy_standin import LegacyCausalLM
    from transformers import GenerationConfig, GenerationMixin

    language_model.__class__ = type("LegacyCausalLM", (LegacyCausalLM, GenerationMixin), attributes)
    language_model.generation_config = GenerationConfig.from_model_config(language_model.config)
    return language_model


@pytest.fixture()
def poisoned_memory(monkeypatch):
    """transformers 5 materialises non-persistent buffers with ``torch.empty_like``: whatever the
    allocator hands back (often garbage, sometimes zeros, now and then even a freed copy of the right
    table). Filling that memory with NaN makes "nobody recomputed the tables" deterministic."""
    empty_like = torch.empty_like

    def poisoned(tensor, *args, **kwargs):
        out = empty_like(tensor, *args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() and out.device.type != "meta" else out

    monkeypatch.setattr(torch, "empty_like", poisoned)


# --------------------------------------------------------------------------------------------------
# 1. Canaries: the problems the shim fixes exist under the installed transformers
# --------------------------------------------------------------------------------------------------


def test_plain_from_pretrained_fails_without_post_init(checkpoint):
    """Fix 1: a model class whose ``__init__`` skips ``post_init()`` cannot be loaded at all."""
    from internvl_legacy_standin import LegacyChat

    folder, _ = checkpoint
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        LegacyChat.from_pretrained(folder)


def test_rotary_tables_are_left_uninitialised_by_a_meta_device_load(checkpoint, poisoned_memory, monkeypatch):
    """Fix 2: loading succeeds (with fix 1) yet the rotary tables are never recomputed: they hold whatever
    memory transformers allocated for them, and the model answers differently from the ground truth
    without any error."""
    from internvl_legacy_standin import LegacyChat

    monkeypatch.setattr(internvl_compat, "restore_rotary_tables", lambda module: 0)
    model = load_legacy(LegacyChat, str(checkpoint[0]), dtype=torch.float32)
    for rotary in rotaries(model):
        assert rotary.cos_cached.isnan().all() and rotary.sin_cached.isnan().all()
        assert rotary.inv_freq.isnan().all()
    reference = eager_reference(checkpoint)
    with torch.no_grad():
        logits = model.language_model(input_ids=torch.tensor(PROMPT)).logits
        expected = reference.language_model(input_ids=torch.tensor(PROMPT)).logits
    assert not torch.allclose(logits, expected, equal_nan=True)


def test_legacy_language_model_cannot_generate(checkpoint):
    """Fix 3: without ``GenerationMixin`` there is no ``generate``."""
    from transformers import GenerationMixin

    language_model = eager_reference(checkpoint).language_model
    assert not isinstance(language_model, GenerationMixin)
    with pytest.raises(AttributeError, match="generate"):
        language_model.generate(input_ids=torch.tensor(PROMPT), max_new_tokens=2)


def test_legacy_cache_indexing_fails_on_a_dynamic_cache(checkpoint):
    """Fix 4: with ``GenerationMixin`` alone, generate hands the model a ``DynamicCache``, which the legacy
    ``past_key_values[0][0]`` cannot index."""
    language_model = partly_fixed(eager_reference(checkpoint).language_model, {})
    with pytest.raises(TypeError, match="not subscriptable"):
        language_model.generate(input_ids=torch.tensor(PROMPT), max_new_tokens=2, do_sample=False)


def test_unsliced_position_ids_break_the_cached_steps(checkpoint):
    """Fix 5: with legacy caches but transformers 5's full-length ``position_ids`` passed through
    unsliced, the first cached step gets positions for the whole sequence and one new token."""
    language_model = partly_fixed(
        eager_reference(checkpoint).language_model,
        {"_supports_default_dynamic_cache": classmethod(lambda cls: False)},
    )
    with pytest.raises(RuntimeError):
        language_model.generate(input_ids=torch.tensor(PROMPT), max_new_tokens=2, do_sample=False)


# --------------------------------------------------------------------------------------------------
# 2-5. The shim
# --------------------------------------------------------------------------------------------------


def test_load_legacy_loads_every_weight_and_recomputes_the_rotary_tables(checkpoint, poisoned_memory):
    from internvl_legacy_standin import LegacyChat, LegacyConfig

    folder, tensors = checkpoint
    model = load_legacy(LegacyChat, str(folder), dtype=torch.float32)
    assert type(model).__name__ == "LegacyChat" and isinstance(model, LegacyChat)
    state = model.state_dict()
    assert set(state) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(state[name], tensor), name
    reference = eager_reference(checkpoint)
    for loaded, truth in zip(rotaries(model), rotaries(reference), strict=True):
        assert torch.equal(loaded.inv_freq, truth.inv_freq)
        assert torch.equal(loaded.cos_cached, truth.cos_cached)
        assert torch.equal(loaded.sin_cached, truth.sin_cached)
    assert restore_rotary_tables(model.language_model) == LegacyConfig().num_hidden_layers == 2


def test_generate_after_load_legacy_matches_a_greedy_loop_without_cache(checkpoint):
    """Cached generation through the shim (tuple cache built by the legacy model, positions derived by
    its own code) gives the same tokens as full forwards of the eagerly built model."""
    from internvl_legacy_standin import LegacyChat

    model = load_legacy(LegacyChat, str(checkpoint[0]), dtype=torch.float32)
    expected = greedy_without_cache(eager_reference(checkpoint).language_model, PROMPT[0])
    prompt = torch.tensor(PROMPT)
    with torch.no_grad():
        out = model.language_model.generate(input_ids=prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert out[0, : prompt.shape[1]].tolist() == PROMPT[0]
    assert out[0, prompt.shape[1] :].tolist() == expected


def test_generate_from_inputs_embeds_matches_the_greedy_loop(checkpoint):
    """InternVL's ``chat`` calls ``language_model.generate(inputs_embeds=..., attention_mask=...)``: the
    legacy code uses the embeddings at the first step only, then its tuple cache."""
    from internvl_legacy_standin import LegacyChat

    model = load_legacy(LegacyChat, str(checkpoint[0]), dtype=torch.float32)
    expected = greedy_without_cache(eager_reference(checkpoint).language_model, PROMPT[0])
    language_model = model.language_model
    prompt = torch.tensor(PROMPT)
    with torch.no_grad():
        embeds = language_model.get_input_embeddings()(prompt)
        out = language_model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    assert out.tolist() == [expected]  # only the new tokens: what InternVL's chat decodes as the answer


def test_make_generative_leaves_a_generative_model_alone(checkpoint):
    """A hub revision that already generates under this transformers keeps its own class."""
    from internvl_legacy_standin import LegacyCausalLM
    from transformers import GenerationMixin

    language_model = eager_reference(checkpoint).language_model
    generative = type("AlreadyGenerative", (LegacyCausalLM, GenerationMixin), {})
    language_model.__class__ = generative
    assert make_generative(language_model) is language_model
    assert type(language_model) is generative


def test_bfloat16_load_generates_with_bfloat16_tables(checkpoint):
    """In bfloat16 the tables are what the module's own ``_set_cos_sin_cache`` makes in that dtype (as
    4.x's ``from_pretrained(torch_dtype=...)`` gave), and generation runs."""
    from internvl_legacy_standin import LegacyChat, LegacyConfig, LegacyRotaryEmbedding

    model = load_legacy(LegacyChat, str(checkpoint[0]), dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    config = LegacyConfig()
    length = config.max_position_embeddings
    truth = LegacyRotaryEmbedding(config.hidden_size // config.num_attention_heads, length, config.rope_theta)
    truth._set_cos_sin_cache(length, torch.device("cpu"), torch.bfloat16)
    for rotary in rotaries(model):
        assert rotary.cos_cached.dtype == rotary.sin_cached.dtype == torch.bfloat16
        assert torch.equal(rotary.cos_cached, truth.cos_cached)
        assert torch.equal(rotary.sin_cached, truth.sin_cached)
    with torch.no_grad():
        out = model.language_model.generate(
            input_ids=torch.tensor(PROMPT), max_new_tokens=NEW_TOKENS, do_sample=False
        )
    assert out.shape == (1, len(PROMPT[0]) + NEW_TOKENS)
