"""Training promises checked by hand arithmetic on the tiny offline models: train_sr encodes with the
training latent shift ((z - shift) * scaling, not the test path's z * scaling), the regulariser's
diffusion loss is scaled by ``loss.reg_diffusion`` (its LoRA's gradient scales with the weight), and
a resumed GRPO run's bar counts on from its checkpoint."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from coz.run import progress
from coz.run.cli import quote_null_choices, tool_config_dir

TINY_SR = [
    "experiment=smoke",
    "logger=csv",
    "data.crop=32",
    "data.batch_size=1",
    "log.images_every=0",
    "threads=auto",
    "trainer.accelerator=cpu",
    "stages=[{degradation: bicubic, steps: 1}]",
    "checkpoint.every_n_steps=0",
]


def compose_tool(tool: str, overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        return compose(config_name=tool, overrides=quote_null_choices(overrides))


def sr_module(run_dir, *overrides):
    from coz.train_sr.tool import build

    trainer, module = build(compose_tool("train_sr", [*TINY_SR, *overrides]), run_dir)
    module.configure_model()
    return trainer, module


def _one_step(run_dir, weight: float):
    """(the module after one train_sr step with ``loss.reg_diffusion=weight``, the gradients of the
    regulariser's fake-score LoRA at that step)."""
    trainer, module = sr_module(run_dir, f"loss.reg_diffusion={weight}", "loss.lpips=0")
    grads: dict[int, torch.Tensor] = {}
    step = module._optimiser_step

    def capture():
        for i, p in enumerate(module.reg.parameters_to_train()):
            if p.grad is not None:
                grads[i] = p.grad.detach().clone()
        step()

    module._optimiser_step = capture
    trainer.fit(module)
    return module, grads


@pytest.fixture(scope="module")
def two_weights(tmp_path_factory):
    """One step at reg_diffusion 1 and one at 0.25, from the same seeds (shared by two tests)."""
    root = tmp_path_factory.mktemp("reg")
    return _one_step(root / "w1", 1.0), _one_step(root / "w025", 0.25)


def test_train_sr_encodes_with_the_training_latent_shift(two_weights):
    (module, _), _ = two_weights
    backbone = module.gen.backbone
    vae = backbone.vae
    shift, scaling = vae.config.shift_factor, vae.config.scaling_factor
    assert shift, "the tiny SD3 VAE must have a shift for this test to tell the paths apart"
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ours = backbone.encode(x, [torch.Generator().manual_seed(3)])
        sample = vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, (sample - shift) * scaling)


def test_the_regularisers_diffusion_loss_is_scaled_by_its_weight(two_weights):
    (_, full), (_, quarter) = two_weights
    assert full.keys() == quarter.keys() and any(g.abs().sum() > 0 for g in full.values())
    for name, g in full.items():  # only the diffusion loss reaches the fake LoRA: its gradient is linear in w
        # tolerance from the tensor's largest entry: its smallest entries are float32 round-off
        torch.testing.assert_close(quarter[name], 0.25 * g, rtol=1e-3, atol=1e-3 * float(g.abs().max()))


def test_a_resumed_grpo_run_counts_on_from_its_checkpoint(tmp_path, monkeypatch):
    from coz.samples import write_samples
    from coz.train_grpo.tool import run

    monkeypatch.delenv("COZ_PROGRESS", raising=False)
    write_samples(tmp_path / "photos")
    base = [
        "experiment=smoke",
        f"input={tmp_path / 'photos'}",
        "data.write_samples=false",
        "logger=csv",
        "critic=keyword",
        "critic.words=[Illuminate]",
        "grpo.generations=2",
        "checkpoint.every_n_steps=1",
        "val.every_n_steps=0",
        "val.at_start=false",
    ]
    run(compose_tool("train_grpo", [*base, "grpo.steps=1"]), run_dir=tmp_path / "run")
    progress.finished.clear()
    run(compose_tool("train_grpo", [*base, "grpo.steps=2"]), run_dir=tmp_path / "run")
    bars = [c for c in progress.finished if c.desc == "train_grpo"]
    assert bars == [progress.Counted("train_grpo", "steps", 2, 2, 1)]  # 1 step from the checkpoint, 1 new
