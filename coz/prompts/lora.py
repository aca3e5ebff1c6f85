"""Loading a PEFT LoRA adapter into the prompt VLM, including the authors' GRPO release.

The paper fine-tunes Qwen2.5-VL with GRPO (section 3.3) and releases the adapter
(``checkpoint-10000``: r=8, alpha=32, dropout 0.05, target regex
``^(model).*\\.(q_proj|o_proj|gate_proj|down_proj|k_proj|up_proj|v_proj)$``; docs/fidelity.md
"prompts"). It was saved with transformers 4.49 module names; transformers 5 renamed them:

    4.49                         5.x
    model.layers.*  (language)   model.language_model.layers.*
    model.embed_tokens / norm    model.language_model.embed_tokens / norm
    visual.*        (vision)     model.visual.*
    lm_head                      lm_head

``load_adapter`` detects the old layout, maps the saved keys to the new names and chooses the
LoRA target modules by matching the adapter's own ``target_modules`` against each module's OLD
name, so the set of adapted modules is exactly the one the authors trained (their regex would
otherwise also catch the vision tower's MLPs, which now live under ``model.``). Adapters saved by
``coz.train_grpo`` (plain ``save_pretrained``) load as they are.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from coz.errors import CozError

log = logging.getLogger("coz.prompts")

PEFT_PREFIX = "base_model.model."
# Paper / released adapter (docs/fidelity.md "Prompts").
PAPER_LORA = dict(r=8, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")
LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def paper_lora_config():
    """The paper's LoRA: rank 8, alpha 32, dropout 0.05 on the language model's projections."""
    from peft import LoraConfig

    pattern = r"^model\.language_model\..*\.(" + "|".join(LANGUAGE_PROJECTIONS) + r")$"
    return LoraConfig(target_modules=pattern, **PAPER_LORA)


def old_to_new(name: str) -> str:
    """A transformers-4.49 Qwen2.5-VL module name -> its transformers-5 name."""
    if name.startswith("visual."):
        return "model." + name
    if name.startswith("model.") and not name.startswith(("model.language_model.", "model.visual.")):
        return "model.language_model." + name[len("model.") :]
    return name


def new_to_old(name: str) -> str:
    """Inverse of ``old_to_new``."""
    if name.startswith("model.visual."):
        return name[len("model.") :]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model.") :]
    return name


def is_old_layout(keys: list[str]) -> bool:
    """True for an adapter saved with transformers < 4.52 Qwen2.5-VL module names."""
    bodies = [k[len(PEFT_PREFIX) :] for k in keys if k.startswith(PEFT_PREFIX)]
    return any(b.startswith(("model.layers.", "visual.")) for b in bodies)


def _targets(target_modules, names: list[str]) -> list[str]:
    """PEFT's target matching (a full-match regex string, or names matched by suffix)."""
    if isinstance(target_modules, str):
        return [n for n in names if re.fullmatch(target_modules, n)]
    wanted = set(target_modules or ())
    return [n for n in names if n in wanted or any(n.endswith("." + t) for t in wanted)]


def load_adapter(model, path: str | Path, merge: bool = False, adapter_name: str = "default"):
    """Wrap ``model`` with the LoRA adapter saved in folder ``path``; merged into the weights if
    ``merge``. Returns the model to use (a PeftModel, or the merged base model)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    path = Path(path).expanduser()
    if not (path / "adapter_config.json").exists():
        raise CozError(
            f"adapter {path}: no adapter_config.json there (expected a PEFT adapter folder, "
            f"e.g. the released checkpoint-10000 or a coz.train_grpo output)"
        )
    from coz.run.weights import read_weights, refuse_nonfinite

    config = read_weights("prompt.adapter", path, lambda: LoraConfig.from_pretrained(str(path)))
    config.inference_mode = True
    weights = read_weights("prompt.adapter", path, lambda: load_peft_weights(str(path), device="cpu"))
    refuse_nonfinite(f"prompt.adapter={path}", weights)
    if is_old_layout(list(weights)):
        weights = {
            PEFT_PREFIX + old_to_new(k[len(PEFT_PREFIX) :]) if k.startswith(PEFT_PREFIX) else k: v
            for k, v in weights.items()
        }
        linear_names = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
        config.target_modules = sorted(
            old_to_new(o) for o in _targets(config.target_modules, [new_to_old(n) for n in linear_names])
        )
        log.info(
            "adapter %s: transformers-4.49 module names mapped to the current ones (%d LoRA modules)",
            path,
            len(config.target_modules),
        )
    if not config.target_modules:
        raise CozError(f"adapter {path}: its target_modules match no module of this model")

    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    expected = set(get_peft_model_state_dict(peft_model, adapter_name=adapter_name))
    unmatched = sorted(set(weights) - expected)
    if unmatched:
        raise CozError(
            f"adapter {path}: {len(unmatched)} key(s) match no LoRA module of the model, e.g. "
            f"{', '.join(unmatched[:3])}"
        )
    missing = sorted(expected - set(weights))
    if missing:
        raise CozError(
            f"adapter {path}: {len(missing)} LoRA weight(s) are missing from the file, e.g. "
            f"{', '.join(missing[:3])}"
        )
    set_peft_model_state_dict(peft_model, weights, adapter_name=adapter_name)
    peft_model.eval()
    return peft_model.merge_and_unload() if merge else peft_model
