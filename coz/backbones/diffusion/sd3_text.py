"""SD3's three text encoders, as the OSEDiff-SD3 code uses them (docs/fidelity.md, "OSEDiff-SD3
inference and full-image SR").

    CLIP-L, CLIP-G: padded/truncated to 77 tokens, penultimate hidden states   (B, 77, dL), (B, 77, dG)
    clip = cat([L, G], -1) zero-padded to the joint width D                     (B, 77, D)
    T5: padded/truncated to 512 tokens, last hidden state                        (B, 512, D)
    prompt_embeds = cat([clip, t5], dim=1)                                       (B, 77 + 512, D)
    pooled = cat([L.text_embeds, G.text_embeds], -1)                             (B, pL + pG)

SD3-medium: dL = 768, dG = 1280, D = 4096, pooled 2048. No attention masks (the authors pass
none), no negative prompt. Without T5 (``drop_t5``) its 512 tokens are zeros, as diffusers does
with ``text_encoder_3=None``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from coz.run.dtypes import cast_keeping_fp32

CLIP_TOKENS = 77
T5_TOKENS = 512


class SD3TextEncoders:
    """Tokenizers + encoders; ``encode(prompts)`` -> (prompt_embeds, pooled) on ``device``.

    ``offload``: the encoders live on the CPU and visit ``device`` only while encoding.
    """

    def __init__(
        self,
        tokenizers: list,
        encoders: list[nn.Module | None],
        joint_dim: int,
        dtype: torch.dtype = torch.float16,
        offload: bool = False,
        t5_tokens: int = T5_TOKENS,
    ) -> None:
        if len(tokenizers) != 3 or len(encoders) != 3 or encoders[0] is None or encoders[1] is None:
            raise ValueError("SD3 needs CLIP-L and CLIP-G (and optionally T5) tokenizers and encoders")
        self.tokenizers, self.encoders = tokenizers, encoders
        self.joint_dim, self.dtype, self.offload, self.t5_tokens = joint_dim, dtype, offload, t5_tokens
        self.device = torch.device("cpu")
        for enc in self.modules():  # T5's ``wo`` stays fp32 in fp16, as from_pretrained keeps it
            cast_keeping_fp32(enc, dtype).eval().requires_grad_(False)

    def modules(self) -> list[nn.Module]:
        return [e for e in self.encoders if e is not None]

    @property
    def drop_t5(self) -> bool:
        return self.encoders[2] is None

    def to(self, device: torch.device | str) -> SD3TextEncoders:
        self.device = torch.device(device)
        for enc in self.modules():
            enc.to("cpu" if self.offload else self.device)
        return self

    def _ids(self, tokenizer, prompts: list[str], length: int) -> torch.Tensor:
        return tokenizer(
            prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)  # (B, length)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) prompts -> prompt_embeds (B, 77 + t5_tokens, D), pooled (B, pL + pG), float32."""
        hidden, pooled = [], []
        for tokenizer, encoder in zip(self.tokenizers[:2], self.encoders[:2], strict=True):
            with self._visiting(encoder):
                out = encoder(self._ids(tokenizer, prompts, CLIP_TOKENS), output_hidden_states=True)
            hidden.append(out.hidden_states[-2].float())  # (B, 77, dL|dG): penultimate layer
            pooled.append(out.text_embeds.float())  # (B, pL|pG): projected pooled output
        clip = torch.cat(hidden, dim=-1)  # (B, 77, dL + dG)
        clip = nn.functional.pad(clip, (0, self.joint_dim - clip.shape[-1]))  # (B, 77, D)
        if self.drop_t5:
            t5 = clip.new_zeros(len(prompts), self.t5_tokens, self.joint_dim)  # (B, 512, D)
        else:
            with self._visiting(self.encoders[2]):
                t5 = self.encoders[2](self._ids(self.tokenizers[2], prompts, self.t5_tokens))[0].float()
        return torch.cat([clip, t5], dim=1), torch.cat(pooled, dim=-1)

    @contextlib.contextmanager
    def _visiting(self, module: nn.Module) -> Iterator[None]:
        """With ``offload``, bring ``module`` to the device for the duration of the block."""
        if self.offload:
            module.to(self.device)
        try:
            yield
        finally:
            if self.offload:
                module.to("cpu")
