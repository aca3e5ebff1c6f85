"""The curated mutations of ``make mutate``: each breaks one promise of the README in one small way.

``edits``: (exact original snippet, replacement) pairs applied to ``file`` in order; each snippet must
occur exactly once (otherwise the mutation is reported as stale). ``tests``: the pytest arguments
that should notice (files or node ids; kept narrow: each run pays the imports). ``survivor_note``:
why a mutation that survives is acceptable, when one does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    edits: tuple[tuple[str, str], ...]
    promise: str
    tests: tuple[str, ...]
    survivor_note: str = ""


def m(id, file, old, new, promise, *tests, more=(), note=""):  # noqa: A002
    return Mutation(id, file, ((old, new), *more), promise, tuple(tests), note)


OUT = "tests/test_promises_outputs.py"
IMG = "tests/test_promises_images.py"
CHAIN = "tests/test_promises_chain.py"
RUN = "tests/test_promises_run.py"
EVAL = "tests/test_promises_evaluation.py"
PROMPT_SETTINGS = "tests/test_promises_prompt_settings.py"
BACKBONES = "tests/test_promises_backbones.py"
TRAINING = "tests/test_promises_training.py"
WANDB = "tests/test_promises_wandb.py"
APP = "tests/test_app.py"
APP_UPLOADS = "tests/test_app_uploads.py"  # the swept server: its own module

MUTATIONS: list[Mutation] = [
    # ---------------------------------------------------------------- run folders: atomic, resumable
    m(
        "zoom-json-first",
        "coz/zoom/outputs.py",
        '    labels = [f"x{scale}" for scale in zoom.scales]\n',
        '    write_text_atomic(folder / "zoom.json", "{}")\n    labels = [f"x{scale}" for scale in zoom.scales]\n',
        "an image counts as done only once zoom.json exists (written last)",
        OUT,
    ),
    m(
        "done-by-folder",
        "coz/zoom/outputs.py",
        '    return (image_dir(run_dir, name) / "zoom.json").exists()',
        "    return image_dir(run_dir, name).exists()",
        "an image counts as done only once zoom.json exists",
        OUT,
    ),
    m(
        "zoom-json-in-place",
        "coz/zoom/outputs.py",
        '    write_text_atomic(folder / "zoom.json", json.dumps(record, indent=2))',
        '    (folder / "zoom.json").write_text(json.dumps(record, indent=2))',
        "files are written atomically (zoom.json)",
        OUT,
    ),
    m(
        "prompt-in-place",
        "coz/zoom/outputs.py",
        '            files[f"prompt_{i}"] = write_text_atomic(folder / f"prompt_{i}.txt", step.prompt)',
        '            (folder / f"prompt_{i}.txt").write_text(step.prompt)\n'
        '            files[f"prompt_{i}"] = folder / f"prompt_{i}.txt"',
        "files are written atomically (prompt_i.txt)",
        OUT,
    ),
    m(
        "text-in-place",
        "coz/run/atomic.py",
        '    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))',
        "    Path(path).parent.mkdir(parents=True, exist_ok=True)\n"
        '    Path(path).write_text(text, encoding="utf-8")\n    return Path(path)',
        "files are written atomically (every text file)",
        OUT,
    ),
    m(
        "run-json-in-place",
        "coz/run/runinfo.py",
        '    return write_text_atomic(run_dir / "run.json", json.dumps(record, indent=2, default=str))',
        '    (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))\n'
        '    return run_dir / "run.json"',
        "files are written atomically (run.json)",
        OUT,
    ),
    m(
        "png-in-place",
        "coz/viz.py",
        '    with atomic_path(path) as tmp:\n        img.save(tmp, format="PNG", compress_level=1)',
        '    Path(path).parent.mkdir(parents=True, exist_ok=True)\n    img.save(path, format="PNG", compress_level=1)',
        "files are written atomically (PNGs)",
        OUT,
    ),
    m(
        "temp-left-behind",
        "coz/run/atomic.py",
        "        tmp.unlink(missing_ok=True)\n        raise",
        "        raise",
        "a failed write leaves the folder as it was (no temporary files)",
        OUT,
    ),
    m(
        "resume-redoes-all",
        "coz/zoom/tool.py",
        "if not is_finished(run.dir, name)",
        "if True",
        "rerunning into the same folder resumes (finished images are not redone)",
        f"{OUT}::test_an_interrupted_image_is_redone_on_resume",
    ),
    m(
        "mixed-configs",
        "coz/run/resume.py",
        "    if diffs:\n        listed",
        "    if False:\n        listed",
        "a different config into the same folder is refused",
        "tests/test_zoom_cli.py::test_rerun_into_the_same_folder_resumes_and_never_mixes_configs",
    ),
    m(
        "bad-input-exit-0",
        "coz/run/exit_codes.py",
        "        return SKIPPED\n    return DONE",
        "        return DONE\n    return DONE",
        "a folder run with unreadable files exits with status 1",
        "tests/test_zoom_cli.py::test_folder_with_bad_files_keeps_good_results_and_exits_nonzero",
    ),
    m(
        "error-traceback",
        "coz/run/entry.py",
        "        known = (ENVIRONMENT, missing) if missing else classify(err)\n",
        "        raise\n",
        "bad input is one line, never a traceback",
        "tests/test_zoom_cli.py::test_missing_input_is_one_clear_line_before_torch_loads",
    ),
    # ---------------------------------------------------------------------------------- bad input
    m(
        "exif-wrong-way",
        "coz/images.py",
        "        img = ImageOps.exif_transpose(img)\n",
        "        img = ImageOps.exif_transpose(img)\n"
        "        if orientation in (6, 8):\n"
        "            img = img.transpose(Image.Transpose.ROTATE_180)\n",
        "EXIF rotation is applied (the right way round)",
        "tests/test_images.py",
        IMG,
    ),
    m(
        "exif-some-ignored",
        "coz/images.py",
        "    if orientation in (2, 3, 4, 5, 6, 7, 8):",
        "    if orientation in (3, 6, 8):",
        "EXIF rotation is applied (mirrored orientations too)",
        "tests/test_images.py",
        IMG,
    ),
    m(
        "alpha-on-black",
        "coz/images.py",
        'band = Image.alpha_composite(Image.new("RGBA", band.size, (255, 255, 255, 255)), band)',
        'band = Image.alpha_composite(Image.new("RGBA", band.size, (0, 0, 0, 255)), band)',
        "transparency is composited on white",
        "tests/test_images.py",
    ),
    m(
        "bomb-limit-loose",
        "coz/images.py",
        "    if max_pixels is not None and w * h > max_pixels:",
        "    if max_pixels is not None and w * h > 4 * max_pixels:",
        "decompression bombs (over max_pixels) are refused",
        "tests/test_images.py",
    ),
    m(
        "last-frame",
        "coz/images.py",
        "            img.seek(0)",
        "            img.seek(n_frames - 1)",
        "multi-frame files use their first frame",
        "tests/test_images.py",
    ),
    m(
        "x0-size-check-gone",
        "coz/images.py",
        '    if size <= 0:\n        raise ValueError(f"size must be positive, got {size}")\n    label',
        "    label",
        "prepare_x0 refuses a non-positive size itself, in its own words",
        "tests/test_images.py",
        IMG,
    ),
    m(
        "x0-top-left-crop",
        "coz/images.py",
        "        out = resized.crop((left, top, left + size, top + size))",
        "        out = resized.crop((0, 0, size, size))",
        "x0 is the input resized to 512 on its short side and center-cropped",
        "tests/test_images.py",
    ),
    # ---------------------------------------------------------------------------------- the chain
    m(
        "crop-not-centred",
        "coz/geometry.py",
        "    return ((size - side) // 2, (size - side) // 2, (size + side) // 2, (size + side) // 2)",
        "    return (0, 0, side, side)",
        "each step crops the center 128x128 (box 192..320)",
        "tests/test_geometry.py",
        "tests/test_chain.py",
    ),
    m(
        "ar2-without-previous",
        "coz/chain.py",
        "        previous = sources if multiscale else [None] * len(sources)",
        "        previous = [None] * len(sources)",
        "recursive_multiscale gives the prompt extractor the previous state and the view",
        "tests/test_chain.py",
    ),
    m(
        "user-prompt-order",
        "coz/prompts/base.py",
        '    return f"{extracted}, {user_prompt},"',
        '    return f"{user_prompt}, {extracted},"',
        'user_prompt is appended as "{prompt}, {user_prompt},"',
        "tests/test_chain.py",
    ),
    # ---------------------------------------------------------------------------- full-image SR
    m(
        "full-keeps-every-tile",
        "coz/tiling.py",
        "    out = weight_sum = None\n",
        "    out = weight_sum = None\n    kept = []\n",
        "full-image peak memory follows the tile, not the image",
        "tests/test_full_image_memory.py",
        more=(
            (
                "        out[..., t:b, le:r] += y * w\n",
                "        out[..., t:b, le:r] += y * w\n        kept.append(y)\n",
            ),
        ),
    ),
    m(
        "flat-blending",
        "coz/tiling.py",
        "        out[..., t:b, le:r] += y * w\n        weight_sum[t:b, le:r] += w",
        "        out[..., t:b, le:r] += y\n        weight_sum[t:b, le:r] += 1",
        "tiles are blended with Gaussian weights",
        "tests/test_tiling.py",
    ),
    m(
        "no-output-limit",
        "coz/full_image.py",
        "    if out_pixels > options.max_output_pixels:",
        "    if False:",
        "an image whose result would pass zoom.max_output_pixels is refused at once",
        "tests/test_full_image.py::test_x0_is_the_input_trimmed_to_multiples_of_4_and_huge_outputs_are_refused",
    ),
    # ----------------------------------------------------------------------------------- training
    m(
        "never-hflip",
        "coz/train_sr/data.py",
        "        if self.hflip and rng.uniform() < 0.5:\n            hr = hr[:, ::-1]",
        "        if self.hflip and rng.uniform() < 0.5:\n            hr = hr[:, :]",
        "random crops and flips (horizontal) in the training data",
        "tests/test_train_sr_data.py",
        IMG,
    ),
    m(
        "vflip-by-default",
        "coz/train_sr/data.py",
        "        vflip: bool = False,",
        "        vflip: bool = True,",
        "the OSEDiff recipe flips horizontally only",
        "tests/test_train_sr_data.py",
        IMG,
    ),
    m(
        "every-rank-rank0-items",
        "coz/train_sr/data.py",
        "            first = (m * world + self.rank) * b",
        "            first = (m * world) * b",
        "DDP: each rank trains on its own items, every item once",
        "tests/test_train_sr_data.py",
    ),
    m(
        "ddp-rank0-batches",
        "coz/train_sr/module.py",
        "        sampler = StepSampler(layout, int(self.trainer.global_rank), start, stop)",
        "        sampler = StepSampler(layout, 0, start, stop)",
        "trainer.devices=N trains with DDP: every rank on its own batches",
        "tests/test_train_sr_run.py::test_ddp_two_cpu_processes_one_run_folder",
    ),
    m(
        "fresh-run-over-checkpoints",
        "coz/run/checkpoint_files.py",
        "        if newest_checkpoint(here):",
        "        if False:",
        "resume=none (a fresh run) into a folder that already holds checkpoints is refused",
        "tests/test_train_sr_run.py::test_a_finished_run_continues_with_more_steps_logs_into_one_wandb_run_and_checkpoints_follow",
    ),
    m(
        "resume-not-from-newest",
        "coz/run/checkpoint_files.py",
        "        if step > best_step:",
        "        if best is None:",
        "a resume takes the run folder's checkpoint with the most steps (a killed run's last periodic one)",
        "tests/test_run_checkpoints.py",
    ),
    m(
        "checkpoints-count-micro-batches",
        "coz/run/checkpoints.py",
        "    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:\n"
        "        step = int(pl_module.completed_steps)",
        "    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:\n"
        "        step = int(batch_idx + 1)",
        "checkpoints every checkpoint.every_n_steps optimisation steps (not micro-batches)",
        "tests/test_run_checkpoints.py",
    ),
    m(
        "rank0-advantages",
        "coz/train_grpo/module.py",
        "        advantages = advantages[self.global_rank * n : (self.global_rank + 1) * n]",
        "        advantages = advantages[:n]",
        "DDP GRPO: each rank uses the advantages of its own completions",
        "tests/test_promises_grpo_ranks.py",
    ),
    m(
        "ddp-rank0-advantages",
        "coz/train_grpo/module.py",
        "        advantages = advantages[self.global_rank * n : (self.global_rank + 1) * n]",
        "        advantages = advantages[:n]",
        "DDP GRPO (2 real processes): each rank uses the advantages of its own completions",
        "tests/test_grpo_train.py::test_ddp_two_cpu_processes_train_into_one_folder",
    ),
    m(
        "advantage-global-mean",
        "coz/train_grpo/loss.py",
        "    advantages = rewards - mean\n",
        "    advantages = rewards - rewards.mean()\n",
        "GRPO advantages are each reward minus its group's mean (Algorithm 2, line 17)",
        "tests/test_grpo_loss.py",
    ),
    # ------------------------------------------------------------------------- released formats
    m(
        "osediff-list-key-renamed",
        "coz/backbones/diffusion/osediff_pkl.py",
        '    "default_others": "unet_lora_others_modules",',
        '    "default_others": "unet_lora_other_modules",',
        "sd21 loads the released osediff.pkl (its key names)",
        "tests/test_backbone_sd21.py::test_released_osediff_pkl_round_trip_is_exact",
        "tests/test_released_formats.py",
    ),
    m(
        "osediff-lists-sorted",
        "coz/backbones/diffusion/osediff_pkl.py",
        "    return targets\n\n\ndef osediff_vae_targets",
        "    return {a: sorted(n) for a, n in targets.items()}\n\n\ndef osediff_vae_targets",
        "osediff.pkl module lists in the authors' order",
        "tests/test_backbone_sd21.py::test_released_osediff_pkl_round_trip_is_exact",
        "tests/test_released_formats.py",
    ),
    m(
        "osediff-vae-deduplicated",
        "coz/backbones/diffusion/osediff_pkl.py",
        "    return targets\n\n\ndef _unique",
        "    return _unique(targets)\n\n\ndef _unique",
        "osediff.pkl's VAE list repeats names as the authors' loop does",
        "tests/test_released_formats.py",
    ),
    m(
        "osediff-alpha",
        "coz/backbones/diffusion/osediff_pkl.py",
        "LORA_ALPHA = 8",
        "LORA_ALPHA = 4",
        "OSEDiff LoRA scale alpha / r = 8 / 4 as released",
        "tests/test_backbone_sd21.py::test_lora_layout_follows_the_authors_rules",
    ),
    m(
        "s3diff-targets-reordered",
        "coz/backbones/diffusion/s3diff_lora.py",
        '    "proj_in",\n    "proj_out",\n    "ff.net.2",',
        '    "proj_out",\n    "proj_in",\n    "ff.net.2",',
        "s3diff.pkl's target list as the authors wrote it",
        "tests/test_backbone_s3diff.py::test_release_files_have_the_authors_layout_and_round_trip_exactly",
        "tests/test_released_formats.py",
    ),
    m(
        "s3diff-key-order",
        "coz/backbones/diffusion/s3diff_lora.py",
        '    "w",\n    "state_embeddings",\n)',
        '    "state_embeddings",\n    "w",\n)',
        "s3diff.pkl's keys as the authors save them",
        "tests/test_released_formats.py",
        note="equivalent mutant, kept as a reminder: RELEASE_KEYS' order only drives the reader's checks; "
        "the file's key order comes from the writer, which the test pins (list(sd) == the literal keys). "
        "s3diff-embedding-renamed below breaks the same promise observably.",
    ),
    m(
        "s3diff-embedding-renamed",
        "coz/backbones/diffusion/s3diff_lora.py",
        '    "state_dict_unet_block": "unet_block_embeddings",',
        '    "state_dict_unet_blocks": "unet_block_embeddings",',
        "s3diff.pkl's keys as the authors save them (state_embeddings)",
        "tests/test_released_formats.py",
    ),
    # -------------------------------------------------------------------------------- evaluation
    m(
        "niqe-wrong-names",
        "coz/evaluate/niqe_params.py",
        '    mat = {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]}',
        '    mat = {"mu_pris_param": params["mu_pris_param"], "cov_pris_param": params["cov_pris_param"]}',
        "make install converts NIQE's parameters to the file pyiqa reads",
        "tests/test_niqe_params.py",
    ),
    m(
        "niqe-wrong-values",
        "coz/evaluate/niqe_params.py",
        '    mat = {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]}',
        '    mat = {"mu_prisparam": params["mu_pris_param"] * 0.9, "cov_prisparam": params["cov_pris_param"]}',
        "make install converts NIQE's parameters unchanged",
        "tests/test_niqe_params.py",
    ),
    m(
        "niqe-no-checksum",
        "coz/evaluate/niqe_params.py",
        "        if digest != SDIST_SHA256:",
        "        if False:",
        "NIQE's parameters come from basicsr 1.4.2 exactly (checksum)",
        "tests/test_niqe_params.py",
    ),
    m(
        "failed-image-scores-0",
        "coz/evaluate/metrics.py",
        "worst.get(c, 100.0 if low else 0.0)",
        "worst.get(c, 0.0)",
        "a failed image scores the worst value (NIQE 100, others 0)",
        "tests/test_evaluation_metrics.py::test_a_failing_metric_scores_its_worst_value_and_is_counted",
    ),
    m(
        "metrics-unseeded",
        "coz/evaluate/metrics.py",
        "                torch.manual_seed(self.seed)",
        "                pass",
        "random-crop metrics are seeded",
        "tests/test_evaluation_metrics.py::test_random_crop_metrics_are_seeded",
    ),
    # ----------------------------------------------------------------------------------- prompts
    m(
        "adapter-ignored",
        "coz/prompts/__init__.py",
        "        model = load_adapter(model, cfg.adapter, merge=cfg.merge_adapter)\n",
        "",
        "prompt.adapter= loads a PEFT LoRA into the prompt extractor",
        "tests/test_promises_prompts.py",
        more=(("        from coz.prompts.lora import load_adapter\n\n", ""),),
    ),
    m(
        "cache-ignores-previous",
        "coz/prompts/cache.py",
        "    image_digest(previous, h)\n",
        "",
        "the prompt cache is keyed by the views' pixels (previous state included)",
        "tests/test_prompts_cache.py",
    ),
    m(
        "view-phrases-kept",
        "coz/prompts/hygiene.py",
        '        r"\\bbased on this knowledge\\b",\n',
        "",
        'prompts are cleaned ("based on this knowledge", view phrases dropped)',
        "tests/test_prompts_hygiene.py",
        "tests/test_promises_hygiene.py",
    ),
    m(
        "clip-limit",
        "coz/prompts/hygiene.py",
        "CLIP_MAX_TOKENS = 77",
        "CLIP_MAX_TOKENS = 80",
        "a warning says when CLIP's 77 tokens truncate a prompt",
        "tests/test_prompts_hygiene.py",
        "tests/test_promises_hygiene.py",
    ),
    # ----------------------------------------------------------- issue 28: survivors of round two
    m(
        "onestep-ar2-context",
        "coz/chain.py",
        "self._super_resolve([z.x0 for z in zooms], scale, scale, multiscale=False)",
        "self._super_resolve([z.x0 for z in zooms], scale, scale, multiscale=True)",
        "onestep prompts see the view alone (AR-1), not x0 as AR-2 context",
        CHAIN,
    ),
    m(
        "center-box-half-sides",
        "coz/geometry.py",
        "    return ((size - side) // 2, (size - side) // 2, (size + side) // 2, (size + side) // 2)",
        "    half, mid = size // (2 * factor), size // 2\n"
        "    return (mid - half, mid - half, mid - half + side, mid - half + side)",
        "the center box is the official arithmetic at every zoom.size (not only 512)",
        CHAIN,
    ),
    m(
        "x0-not-clamped",
        "coz/images.py",
        "    new_w, new_h = max(size, int(width * scale)), max(size, int(height * scale))",
        "    new_w, new_h = int(width * scale), int(height * scale)",
        "x0 is exactly filled where float truncation gives 511 px (no black strip, fidelity.md)",
        CHAIN,
    ),
    m(
        "thin-x0-bicubic",
        "coz/images.py",
        "        out = img.resize((size, size), Image.LANCZOS, box=x0_source_box(w, h, size))",
        "        out = img.resize((size, size), Image.BICUBIC, box=x0_source_box(w, h, size))",
        "a thin image's x0 is LANCZOS-resampled like every other x0",
        CHAIN,
    ),
    m(
        "resume-seed-may-change",
        "coz/run/tool.py",
        'MAY_CHANGE = ("batch_size", "threads", "device", "logger")',
        'MAY_CHANGE = ("batch_size", "threads", "device", "logger", "seed")',
        "a resumed run refuses another seed (every tool)",
        RUN,
    ),
    m(
        "sweep-last-failed-code",
        "coz/run/entry.py",
        "        return max((code for _, code, _ in self.failed), default=DONE)",
        "        return self.failed[-1][1] if self.failed else DONE",
        "a -m sweep exits with its highest code, not its last failed job's",
        RUN,
    ),
    m(
        "zoom-bar-skips-failed",
        "coz/zoom/batches.py",
        "                on_failure(item, err)\n                on_step(chain.steps)\n",
        "                on_failure(item, err)\n",
        "the zoom bar counts a failed image's steps (it reaches its total)",
        RUN,
    ),
    m(
        "niqe-higher-better",
        "coz/evaluate/aggregate.py",
        '    "niqe": ("NIQE", True),',
        '    "niqe": ("NIQE", False),',
        "NIQE is lower-better: the report's CoZ-vs-direct verdicts follow it",
        EVAL,
    ),
    m(
        "shards-not-merged",
        "coz/evaluate/report.py",
        'if k not in ("shard", "trainer", "report")}',
        'if k not in ("trainer", "report")}',
        "the shard jobs of one evaluation merge into one table cell",
        EVAL,
    ),
    m(
        "tile-tokens-128-without-adapter",
        "coz/prompts/__init__.py",
        "    return 16 if tiles else 32 if adapter else 128",
        "    return 16 if tiles and adapter else 32 if adapter else 128",
        "max_new_tokens=auto is 16 per full-image tile, with or without an adapter",
        PROMPT_SETTINGS,
    ),
    m(
        "vlm-fp16-on-gpus",
        "coz/prompts/__init__.py",
        'resolve_dtype(cfg.dtype, device, gpu_default=torch.bfloat16, option="prompt.dtype")',
        'resolve_dtype(cfg.dtype, device, gpu_default=torch.float16, option="prompt.dtype")',
        "the VLM runs in bfloat16 on GPUs (dtype=auto)",
        PROMPT_SETTINGS,
    ),
    m(
        "dape-resize-aliased",
        "coz/prompts/dape.py",
        'mode="bilinear", antialias=True, align_corners=False',
        'mode="bilinear", antialias=False, align_corners=False',
        "DAPE downsizes its views to 384 antialiased (as RAM's PIL transform does)",
        PROMPT_SETTINGS,
    ),
    m(
        "s3diff-colour-fix-adain",
        "coz/backbones/diffusion/s3diff.py",
        '        color_fix: str = "wavelet",\n',
        '        color_fix: str = "adain",\n',
        "S3Diff's colour fix is wavelet by default (its authors' default)",
        BACKBONES,
    ),
    m(
        "s3diff-config-colour-fix-adain",
        "conf/shared/backbone/s3diff.yaml",
        "color_fix: wavelet ",
        "color_fix: adain   ",
        "backbone=s3diff composes the wavelet colour fix",
        BACKBONES,
    ),
    m(
        "cnn-auto-float32-on-gpus",
        "coz/backbones/cnn/backbone.py",
        'resolve_dtype(self._dtype_option, self._device, option="backbone.dtype")',
        'resolve_dtype(self._dtype_option, self._device, torch.float32, option="backbone.dtype")',
        "a CNN backbone's dtype=auto is float16 on a GPU, float32 on the CPU",
        BACKBONES,
    ),
    m(
        "reg-diffusion-weight-ignored",
        "coz/train_sr/module.py",
        '            loss = loss + self.weights["reg_diffusion"] * terms["reg_diffusion"]',
        '            loss = loss + terms["reg_diffusion"]',
        "loss.reg_diffusion weights the regulariser's diffusion loss",
        TRAINING + "::test_the_regularisers_diffusion_loss_is_scaled_by_its_weight",
    ),
    m(
        "train-sr-test-latent-shift",
        "coz/train_sr/generators.py",
        "            cfg.latent_shift = train.latent_shift\n",
        "            pass\n",
        "train_sr encodes with the training latent shift (model.latent_shift=train)",
        TRAINING + "::test_train_sr_encodes_with_the_training_latent_shift",
    ),
    m(
        "grpo-bar-from-zero",
        "coz/train_grpo/module.py",
        'Progress(steps, "train_grpo", "steps", initial=self.global_step, enabled=shown)',
        'Progress(steps, "train_grpo", "steps", initial=0, enabled=shown)',
        "a resumed GRPO run's bar counts on from its checkpoint",
        TRAINING + "::test_a_resumed_grpo_run_counts_on_from_its_checkpoint",
    ),
    m(
        "api-seeds-once",
        "coz/api.py",
        "        seed_everything(cfg.seed)\n        total, done",
        '        if not getattr(self, "_seeded", False):\n'
        "            seed_everything(cfg.seed)\n            self._seeded = True\n        total, done",
        "the API reseeds from seed= at every call",
        "tests/test_promises_api.py",
    ),
    m(
        "logger-group-ignored",
        "coz/run/wandb_run.py",
        '        "group": str(logger_cfg.get("group") or group or default_group(tool)),',
        '        "group": str(group or default_group(tool)),',
        "logger.group= names the W&B group, over the sweep and the preset",
        WANDB,
    ),
    m(
        "preset-group-dropped",
        "coz/run/wandb_run.py",
        '    return f"{tool}/{preset}" if preset else tool',
        "    return tool",
        "an experiment= preset's W&B runs are grouped as <tool>/<preset>",
        WANDB,
    ),
    # ---------------------------------------------------------------- the web demo: what it keeps
    m(
        "app-keeps-one-job-too-many",
        "coz/app/service.py",
        "        while len(self._jobs) > self.cfg.keep_jobs:",
        "        while len(self._jobs) > self.cfg.keep_jobs + 1:",
        "the app's results go after keep_jobs newer jobs (no more are kept or served)",
        APP + "::test_ten_clients_at_once_three_with_the_same_photo",
    ),
    m(
        "app-refused-upload-kept",
        "coz/app/page.py",
        "                if path is not None:\n                    delete_upload(path)\n",
        "",
        "an upload goes when its request is refused before any job runs",
        APP + "::test_bad_uploads_get_a_message_and_the_next_good_one_works",
    ),
    m(
        "app-failed-upload-kept",
        "coz/app/page.py",
        "    try:\n        return service.run(request, report)\n    finally:\n"
        "        if request.upload is not None:\n            delete_upload(request.upload)\n",
        "    result = service.run(request, report)\n"
        "    if request.upload is not None:\n        delete_upload(request.upload)\n    return result\n",
        "a bad upload (not an image, truncated, a pixel bomb) is deleted when its job fails",
        APP + "::test_bad_uploads_get_a_message_and_the_next_good_one_works",
    ),
    m(
        "app-unused-upload-kept",
        "coz/app/pending.py",
        "                if age > self.ttl_s and folder not in held_folders:",
        "                if age > self.ttl_s and folder not in held_folders and not folder.exists():",
        "an unused upload is deleted after upload_ttl_s",
        APP_UPLOADS + "::test_unused_uploads_go_after_the_ttl",
    ),
]
