"""The InternVL2.5 shim (``coz.train_grpo.internvl_compat``) on a tiny stand-in written in the style of the hub's
remote code (InternVLChatModel around InternLM2ForCausalLM, written for transformers 4.3x-4.4x).

The stand-in is ours, not InternVL's: it only shares the traits the shim works around. A chat model whose
``__init__`` skips ``post_init()``; a causal LM that subclasses ``PreTrainedModel`` alone (no
``GenerationMixin``), keeps a legacy ``((k, v), ...)`` tuple cache and has a 4.x-style
``prepare_inputs_for_generation``; InternLM2-style rotary embeddings whose tables are non-persistent
buffers. The canary tests pin down that each problem exists under the installed transformers, so a
transformers upgrade that makes a fix unnecessary (or a shim that stops fixing it) shows up here."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from coz.train_grpo import internvl_compat
from coz.train_grpo.internvl_compat import load_legacy, make_generative, restore_rotary_tables

PROMPT = [[5, 17, 3, 42, 8, 8, 30, 1, 60, 12]]
NEW_TOKENS = 8


# --------------------------------------------------------------------------------------------------
# The stand-in: transformers-4.x-era remote code, in miniature
# --------------------------------------------------------------------------------------------------


class LegacyConfig(PretrainedConfig):
    model_type = "coz_legacy_chat"

    def __init__(
        self,
        vocab_size=64,
        hidden_size=16,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        use_cache=True,
        tie_word_embeddings=False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class LegacyRotaryEmbedding(nn.Module):
    """InternLM2's layout: ``inv_freq`` and the cos/sin tables are non-persistent buffers computed in
    ``__init__`` (so never in a checkpoint), rebuilt by ``_set_cos_sin_cache``; no ``original_inv_freq``, so
    transformers' own ``_init_weights`` does not recognise it."""

    def __init__(self, dim, max_position_embeddings, base):
        super().__init__()
        self.dim, self.max_position_embeddings, self.base = dim, max_position_embeddings, base
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._set_cos_sin_cache(max_position_embeddings, self.inv_freq.device, torch.get_default_dtype())

    def _set_cos_sin_cache(self, seq_len, device, dtype):
        self.max_seq_len_cached = seq_len
        angles = torch.outer(torch.arange(seq_len, device=device).to(self.inv_freq.dtype), self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos().to(dtype), persistent=False)
        self.register_buffer("sin_cached", angles.sin().to(dtype), persistent=False)

    def forward(self, position_ids, dtype):
        """(cos, sin), each (batch, 1, positions, dim), for broadcasting over heads."""
        return self.cos_cached[position_ids][:, None].to(dtype), self.sin_cached[position_ids][:, None].to(
            dtype
        )


def rotate(x, cos, sin):
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class LegacyBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.attention_norm = nn.LayerNorm(config.hidden_size)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.ffn_norm = nn.LayerNorm(config.hidden_size)
        self.up = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.down = nn.Linear(4 * config.hidden_size, config.hidden_size)
        self.rotary_emb = LegacyRotaryEmbedding(
            self.head_dim, config.max_position_embeddings, config.rope_theta
        )

    def forward(self, x, position_ids, past, key_mask):
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, self.head_dim).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (batch, heads, length, dim)
        cos, sin = self.rotary_emb(position_ids, x.dtype)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        keys = k.shape[2]
        # query i (after keys - length cached ones) sees keys up to its own position
        allowed = (
            torch.arange(keys, device=x.device) <= torch.arange(keys - length, keys, device=x.device)[:, None]
        )
        allowed = allowed[None, None]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :keys]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attended = (scores.softmax(-1, dtype=torch.float32).to(v.dtype) @ v).transpose(1, 2)
        x = x + self.wo(attended.reshape(batch, length, width))
        x = x + self.down(nn.functional.gelu(self.up(self.ffn_norm(x))))
        return x, (k, v)


class LegacyCausalLM(PreTrainedModel):
    """Subclasses ``PreTrainedModel`` only, as InternLM2ForCausalLM: ``generate`` came with it before 4.50."""

    config_class = LegacyConfig
    _no_split_modules = ["LegacyBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LegacyBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_embeddings

    def set_input_embeddings(self, value):
        self.tok_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        x = self.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length = x.shape[:2]
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=x.device).expand(batch, -1)
        key_mask = attention_mask.bool() if attention_mask is not None else None
        cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(
                x, position_ids, past_key_values[i] if past_key_values is not None else None, key_mask
            )
            cache.append(kv)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return CausalLMOutputWithPast(
            logits=self.output(self.norm(x)).float(), past_key_values=tuple(cache) if use_cache else None
        )

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        """The transformers-4.x pattern: reads the cache length from a tuple, trims input_ids to the new
        tokens, derives positions from the mask only when none are given, embeds only at the first step."""
        if past_key_values is not None:
            past_length = past_key_values[0][0].shape[2]
            keep_from = past_length if input_ids.shape[1] > past_length else input_ids.shape[1] - 1
            input_ids = input_ids[:, keep_from:]
        position_ids = kwargs.get("position_ids")
        if attention_mask is not None and position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
            if past_key_values:
                position_ids = position_ids[:, -input_ids.shape[1] :]
        if inputs_embeds is not None and past_key_values is None:
            model_inputs = {"inputs_embeds": inputs_embeds}
        else:
            model_inputs = {"input_ids": input_ids}
        model_inputs.update(
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=kwargs.get("use_cache"),
            attention_mask=attention_mask,
        )
        return model_inputs


class LegacyChat(PreTrainedModel):
    """As InternVLChatModel (InternVL2.5's hub revision): builds its language model and never calls
    ``post_init()``."""

    config_class = LegacyConfig
    base_model_prefix = "language_model"
    _no_split_modules = ["LegacyBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.language_model = LegacyCausalLM(config)


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved stand-in: (folder, its tensors as written)."""
    folder = tmp_path_factory.mktemp("legacy_chat")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LegacyChat(LegacyConfig()).save_pretrained(folder)
    return folder, load_file(folder / "model.safetensors")


def eager_reference(checkpoint) -> LegacyChat:
    """The ground truth: built eagerly (no meta device, so ``__init__`` computes the rotary tables), then
    loaded with a strict ``load_state_dict`` of the saved tensors."""
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
    return [m for m in model.modules() if isinstance(m, LegacyRotaryEmbedding)]


def partly_fixed(language_model: LegacyCausalLM, attributes: dict) -> LegacyCausalLM:
    """What ``make_generative`` does (``GenerationMixin`` and a generation config), with only the
    given class ``attributes`` of its remaining fixes."""
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
    folder, _ = checkpoint
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        LegacyChat.from_pretrained(folder)


def test_rotary_tables_are_left_uninitialised_by_a_meta_device_load(checkpoint, poisoned_memory, monkeypatch):
    """Fix 2: loading succeeds (with fix 1) yet the rotary tables are never recomputed: they hold whatever
    memory transformers allocated for them, and the model answers differently from the ground truth
    without any error."""
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
    language_model = eager_reference(checkpoint).language_model
    generative = type("AlreadyGenerative", (LegacyCausalLM, GenerationMixin), {})
    language_model.__class__ = generative
    assert make_generative(language_model) is language_model
    assert type(language_model) is generative


def test_bfloat16_load_generates_with_bfloat16_tables(checkpoint):
    """In bfloat16 the tables are what the module's own ``_set_cos_sin_cache`` makes in that dtype (as
    4.x's ``from_pretrained(torch_dtype=...)`` gave), and generation runs."""
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
