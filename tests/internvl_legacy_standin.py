"""The tiny stand-in for InternVL2.5's hub remote code that tests/test_grpo_internvl_compat.py loads through
the shim (see that file's docstring). Its own module so that transformers is imported when a test needs
it, not when pytest collects the test file (every pytest worker collects every file)."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


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
