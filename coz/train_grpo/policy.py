"""The policy: the prompt VLM of ``prompt=`` (Qwen2.5-VL-3B-Instruct, or the tiny offline twin) with a
trainable LoRA adapter, and the three things GRPO asks of it: sample G completions per pair, score
tokens (log-probabilities), and be its own reference with the adapter disabled.

It is prompted exactly as :class:`coz.prompts.vlm.VLMPrompts` prompts it in ``coz.zoom`` (the same
chat messages, rendered by that class), so what GRPO trains is what the zoom chain runs. The LoRA is
the paper's (r 8, alpha 32, dropout 0.05 on the language model's q/k/v/o/gate/up/down projections;
``lora:`` in the config), saved with ``save_pretrained``, which ``coz.zoom prompt.adapter=`` loads.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from PIL import Image

from coz.train_grpo.loss import completion_mask, selective_log_softmax

log = logging.getLogger("coz.train_grpo")


def lora_config(cfg: DictConfig):
    """A PEFT LoraConfig from ``lora:``; targets are module-name suffixes inside the language model."""
    from peft import LoraConfig

    pattern = r"^model\.language_model\..*\.(" + "|".join(cfg.targets) + r")$"
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=pattern,
    )


def build_policy(
    prompt: DictConfig, lora: DictConfig, device: str | torch.device, gradient_checkpointing=False
):
    """(PeftModel with a trainable adapter, processor). ``prompt.adapter`` set: training continues
    from that adapter; otherwise a fresh one (B = 0: the policy starts as the base model)."""
    from peft import get_peft_model

    if prompt.name == "tiny_vlm":
        from coz.prompts.tiny import build_twin

        model, processor, shared = build_twin(prompt, device)
        if shared:  # the tiny twin is cached per process: never adapt the shared copy
            model = copy.deepcopy(model)
    else:
        from coz.prompts.vlm import load_qwen_vl
        from coz.run.dtypes import resolve_dtype

        dtype = resolve_dtype(prompt.dtype, device, gpu_default=torch.bfloat16, option="prompt.dtype")
        model, processor = load_qwen_vl(prompt.model, prompt.revision, dtype, str(device), prompt.max_pixels)
    model.requires_grad_(False)
    if prompt.adapter:
        from coz.prompts.lora import load_adapter

        model = load_adapter(model, prompt.adapter)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
    else:
        model = get_peft_model(model, lora_config(lora))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()
    return model.to(device), processor


def eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]


@dataclass
class Rollout:
    """One generation round: the prompt inputs (G copies of each pair, pair-major) and what was sampled."""

    inputs: dict
    completion_ids: torch.Tensor  # (N, T)
    mask: torch.Tensor  # (N, T) 1 up to and including the first end-of-sequence token
    texts: list[str]


class PolicyIO:
    """Renders pairs with coz.zoom's messages, samples completions, and scores tokens."""

    def __init__(self, model, processor, multiscale: bool = True) -> None:
        from coz.prompts.vlm import VLMPrompts

        self.model, self.processor = model, processor
        self.renderer = VLMPrompts(model, processor, multiscale=multiscale)  # sets left padding

    def encode(self, firsts: list[Image.Image], seconds: list[Image.Image]) -> dict:
        texts, images = self.renderer.render(list(seconds), list(firsts))
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return dict(inputs)

    @torch.no_grad()
    def generate(self, inputs: dict, **generation) -> Rollout:
        """Sample (or decode greedily) one completion per input row. ``generation``: explicit
        ``generate`` arguments; only those not given fall back to the model's generation config."""
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(**inputs, **generation)
        finally:
            self.model.train(was_training)
        ids = out[:, inputs["input_ids"].shape[1] :]  # (N, T)
        mask = completion_mask(ids, eos_ids(self.model))
        texts = self.processor.batch_decode(
            ids.masked_fill(mask == 0, self.pad_id()), skip_special_tokens=True
        )
        return Rollout(inputs, ids, mask, texts)

    def pad_id(self) -> int:
        pad = self.model.generation_config.pad_token_id
        return int(pad if pad is not None else self.processor.tokenizer.pad_token_id)

    def token_logps(self, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
        """(N, T) log-probabilities of the sampled tokens under the current model (with its adapter
        unless called inside ``disable_adapter()``), logits divided by the sampling temperature."""
        inputs, ids = rollout.inputs, rollout.completion_ids
        n, t = ids.shape
        model_inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in model_inputs:  # text tokens: type 0
            extra = torch.zeros((n, t), dtype=model_inputs["mm_token_type_ids"].dtype, device=ids.device)
            model_inputs["mm_token_type_ids"] = torch.cat([model_inputs["mm_token_type_ids"], extra], 1)
        out = self.model(
            input_ids=torch.cat([inputs["input_ids"], ids], 1),
            attention_mask=torch.cat(
                [inputs["attention_mask"], rollout.mask.to(inputs["attention_mask"])], 1
            ),
            logits_to_keep=t + 1,
            use_cache=False,
            **model_inputs,
        )
        logits = out.logits[:, :-1] / temperature  # (N, T, V): position j predicts completion token j
        return selective_log_softmax(logits, ids)

    def reference_logps(self, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
        """The reference policy's log-probabilities: the same model with its adapter disabled."""
        with torch.no_grad(), self.model.disable_adapter():
            return self.token_logps(rollout, temperature)


def sampling_kwargs(cfg: DictConfig, pad_id: int) -> dict:
    """Explicit ``generate`` arguments for the GRPO rollouts (``grpo:`` in the config)."""
    return dict(
        do_sample=True,
        num_beams=1,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        max_new_tokens=cfg.max_new_tokens,
        pad_token_id=pad_id,
    )


def greedy_kwargs(cfg: DictConfig, pad_id: int) -> dict:
    """Validation decoding: greedy, as ``coz.zoom`` runs the VLM (``val:`` in the config)."""
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id)
    if cfg.repetition_penalty is not None:
        kwargs["repetition_penalty"] = cfg.repetition_penalty
    return kwargs
