"""Loading InternVL2.5's hub code (written for transformers 4.3x-4.4x) under transformers 5, without
editing it.

The pinned hub commit of ``OpenGVLab/InternVL2_5-8B`` ships its own model classes
(``trust_remote_code``). Under transformers 5 they fail in four loud ways and one silent one, each
fixed here from the outside. Fixes 1 and 3-5 apply only where the loaded code still needs them, so a
hub revision that has caught up is left alone; fix 2 always recomputes (the same tables every time):

1. *Loading.* ``InternVLChatModel.__init__`` never calls ``post_init()``, which transformers 5 needs
   (``all_tied_weights_keys``): the class is loaded through a subclass that calls it.
2. *Rotary tables (silent).* transformers 5 builds the model on the meta device and fills buffers
   that are not in the checkpoint with uninitialised memory; it recomputes only its own rotary
   classes. InternLM2's ``inv_freq``/``cos_cached``/``sin_cached`` would hold garbage and the critic
   would answer nonsense without an error: they are recomputed as InternLM2's ``__init__`` does.
3. *generate.* ``InternLM2ForCausalLM`` does not inherit ``GenerationMixin`` (``PreTrainedModel``
   stopped providing it in 4.50): the language model gets a subclass that does.
4. *KV cache.* Its ``prepare_inputs_for_generation`` indexes legacy tuple caches
   (``past_key_values[0][0]``) where transformers 5 hands a ``DynamicCache``: generation starts with
   no cache object, and the model builds and returns its own tuples (cached, linear per token).
5. *Positions.* transformers 5 keeps full-length ``position_ids`` in the generation kwargs for the model
   to slice; InternLM2 passes them through unsliced: they are dropped, so it derives positions from the
   attention mask as it did under 4.x.

Checked in development against InternVL's own code (GitHub, the InternVL2.5 release of 2024-12-17 and
the 2025-09 head) on a tiny random checkpoint: with the fixes, ``chat`` answers token for token as the
same model built eagerly, and as a greedy loop without a cache; without fix 2 the answers are garbage.
"""

from __future__ import annotations

import torch


def load_internvl(model_id: str, revision: str | None, dtype: torch.dtype):
    """``AutoModel.from_pretrained(model_id, trust_remote_code=True, revision=...)``, made to work."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    remote = get_class_from_dynamic_module(config.auto_map["AutoModel"], model_id, revision=revision)
    return load_legacy(remote, model_id, config=config, revision=revision, dtype=dtype)


def load_legacy(remote_class, model_id: str, **kwargs):
    """``remote_class.from_pretrained(model_id, **kwargs)`` with fixes 1-5 (the module docstring)."""

    class WithPostInit(remote_class):  # fix 1
        def __init__(self, *args, **init_kwargs):
            super().__init__(*args, **init_kwargs)
            if not hasattr(self, "all_tied_weights_keys"):
                self.post_init()

    WithPostInit.__name__ = WithPostInit.__qualname__ = remote_class.__name__
    model = WithPostInit.from_pretrained(model_id, **kwargs)
    restore_rotary_tables(model.language_model)
    make_generative(model.language_model)
    return model


def restore_rotary_tables(module: torch.nn.Module) -> int:
    """Fix 2: recompute every InternLM2-style rotary embedding's buffers (``inv_freq`` from ``base``
    and ``dim``, then its own ``_set_cos_sin_cache``) in the weights' dtype; returns how many."""
    dtype = next(module.parameters()).dtype
    count = 0
    for rotary in module.modules():
        needs = ("inv_freq", "base", "dim", "max_position_embeddings", "_set_cos_sin_cache")
        if all(hasattr(rotary, a) for a in needs):
            device = rotary.inv_freq.device
            exponents = torch.arange(0, rotary.dim, 2, device=device).float() / rotary.dim
            rotary.inv_freq = 1.0 / (rotary.base**exponents)
            rotary._set_cos_sin_cache(seq_len=rotary.max_position_embeddings, device=device, dtype=dtype)
            count += 1
    return count


def make_generative(language_model: torch.nn.Module) -> torch.nn.Module:
    """Fixes 3-5 on a language model that cannot ``generate`` under this transformers (in place)."""
    from transformers import GenerationConfig, GenerationMixin

    if isinstance(language_model, GenerationMixin) or not hasattr(
        language_model, "prepare_inputs_for_generation"
    ):
        return language_model  # generates already, or is not a legacy generative model at all
    legacy = type(language_model)

    # the named arguments matter: generate() accepts inputs_embeds only if this signature names it
    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        kwargs.pop("position_ids", None)  # fix 5: let the legacy code derive them
        return legacy.prepare_inputs_for_generation(
            self,
            input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )

    language_model.__class__ = type(
        legacy.__name__,
        (legacy, GenerationMixin),  # fix 3
        {
            "_supports_default_dynamic_cache": classmethod(lambda cls: False),  # fix 4
            "prepare_inputs_for_generation": prepare_inputs_for_generation,
        },
    )
    if getattr(language_model, "generation_config", None) is None:
        language_model.generation_config = GenerationConfig.from_model_config(language_model.config)
    return language_model
