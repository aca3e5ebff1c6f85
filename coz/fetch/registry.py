"""Every release ``coz-fetch`` knows: where it comes from, what pins it, where it goes.

What is pinned, exactly (written from the releases' public repositories, read offline):
- Files kept in a GitHub repository (the Chain-of-Zoom, OSEDiff and S3Diff releases commit their
  checkpoints to git) are fetched at a commit, and each is checked against its **git object id**
  (the SHA-1 of ``"blob <size>\\0" + content``, read from that commit's tree): the exact bytes are
  pinned, though their sha256 could not be computed here (the files themselves are not offline).
- RAM's tag list and thresholds (small text files in the same commit) are pinned by sha256 as well.
- Hub repositories (RAM's weights, S3Diff's weights, the base models) are not pinned: their commit
  and sha256 cannot be known offline. ``revision=None`` says so; coz-fetch then prints the commit it
  got and each file's sha256, and ``--revision`` pins a hub release by hand.
- The GRPO adapter (``ckpt/VLM_LoRA/checkpoint-10000``) came with a later Chain-of-Zoom commit that
  is not in the copy read here: it is fetched from the branch ``main``, unpinned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The commits the pinned files are read at (their trees give the git object ids below).
COZ_COMMIT = "42deeda06449cbce6f52af2b400b1037f03a4cb0"  # bryanswkim/Chain-of-Zoom, 2 June 2025
OSEDIFF_COMMIT = "fcc4f09c7ed66a9bc0ba9433940d76b343142426"  # cswry/OSEDiff, 13 Dec 2024
S3DIFF_COMMIT = "6a2e0a47676f2f01fccdfd4e940077d3038d953e"  # ArcticHare105/S3Diff, 9 Nov 2024


def github_file(repo: str, ref: str, path: str) -> str:
    """GitHub's /raw/ address: it redirects to the file itself, Git LFS content included."""
    return f"https://github.com/{repo}/raw/{ref}/{path}"


@dataclass(frozen=True)
class RemoteFile:
    """One plain file (pooch): ``url`` names a commit where one is known."""

    url: str
    path: str  # where it goes, under the weights folder
    sha256: str | None = None  # None: not knowable offline (see git_blob)
    git_blob: str | None = None  # the git object id at the pinned commit
    pinned: bool = True  # False: a branch, not a commit


@dataclass(frozen=True)
class HubFiles:
    """Files of a Hugging Face hub repository (huggingface_hub, into its cache)."""

    repo_id: str
    repo_type: str = "model"
    revision: str | None = None  # None: not pinned (the hub's main; unknown offline)
    files: tuple[str, ...] = ()  # () = the whole repository (a base model)
    place: str | None = None  # a folder under the weights folder to link the files into; None: cache only


@dataclass(frozen=True)
class Release:
    name: str
    what: str
    source: str  # the page that publishes it
    files: tuple[RemoteFile, ...] = ()
    hub: tuple[HubFiles, ...] = ()
    uses: tuple[str, ...] = field(default=())  # the options that =auto finds it with

    @property
    def pinned(self) -> bool:
        return all(f.pinned and (f.sha256 or f.git_blob) for f in self.files) and all(
            h.revision for h in self.hub
        )


def _coz(path: str, dest: str, blob: str) -> RemoteFile:
    return RemoteFile(github_file("bryanswkim/Chain-of-Zoom", COZ_COMMIT, path), dest, git_blob=blob)


RELEASES: tuple[Release, ...] = (
    Release(
        "coz-sd3",
        "Chain-of-Zoom's OSEDiff-SD3 weights: the transformer LoRA and the VAE encoder",
        "https://github.com/bryanswkim/Chain-of-Zoom (ckpt/SR_LoRA, ckpt/SR_VAE)",
        files=(
            _coz(
                "ckpt/SR_LoRA/model_20001.pkl",
                "SR_LoRA/model_20001.pkl",
                "fa24c13a5549d028b94e4121c16b171800e66ec3",
            ),
            _coz(
                "ckpt/SR_VAE/vae_encoder_20001.pt",
                "SR_VAE/vae_encoder_20001.pt",
                "643b0f323686d929d257e4fa94cbe8e158150056",
            ),
        ),
        uses=("backbone.transformer_lora", "backbone.vae_encoder"),
    ),
    Release(
        "dape",
        "SeeSR's DAPE (RAM's tagger fine-tuned on degraded images), as Chain-of-Zoom ships it, with RAM's tag list",
        "https://github.com/bryanswkim/Chain-of-Zoom (ckpt/DAPE, ram/data)",
        files=(
            _coz("ckpt/DAPE/DAPE.pth", "DAPE/DAPE.pth", "30c431f52751c7a91d16db64ed4e56c1baf2e9e0"),
            RemoteFile(
                github_file("bryanswkim/Chain-of-Zoom", COZ_COMMIT, "ram/data/ram_tag_list.txt"),
                "RAM/ram_tag_list.txt",
                sha256="5d96d2f7225527480ad773aaac76b6e5c08a18adf6eae9ca7d2ab923d5e7bd8b",
                git_blob="49c840b71915f639fb79cd83ac4a3e313cfbc2b1",
            ),
            RemoteFile(
                github_file("bryanswkim/Chain-of-Zoom", COZ_COMMIT, "ram/data/ram_tag_list_threshold.txt"),
                "RAM/ram_tag_list_threshold.txt",
                sha256="b6f81d0de1bc7f9c251af512c413eae976c77dbfbadf700d4e3d90510f4c6447",
                git_blob="0472b23c25903900c0dde68fffc9a6a6755f5117",
            ),
        ),
        uses=("prompt.dape_weights", "prompt.tags"),
    ),
    Release(
        "ram",
        "Recognize Anything's Swin-L tagger, ram_swin_large_14m.pth (DAPE's base)",
        "https://huggingface.co/spaces/xinyu1205/recognize-anything",
        hub=(
            HubFiles("xinyu1205/recognize-anything", "space", files=("ram_swin_large_14m.pth",), place="RAM"),
        ),
        uses=("prompt.ram_weights",),
    ),
    Release(
        "osediff-sd21",
        "OSEDiff on Stable Diffusion 2.1-base, osediff.pkl (Table 4's backbone)",
        "https://github.com/cswry/OSEDiff (preset/models)",
        files=(
            RemoteFile(
                github_file("cswry/OSEDiff", OSEDIFF_COMMIT, "preset/models/osediff.pkl"),
                "OSEDiff/osediff.pkl",
                git_blob="bc84dc9729aa6173e8b1087977025a4fc566a5db",
            ),
        ),
        uses=("backbone.osediff_pkl",),
    ),
    Release(
        "s3diff",
        "S3Diff on SD-Turbo: s3diff.pkl (hub) and its degradation estimator de_net.pth (Table 2's backbone)",
        "https://github.com/ArcticHare105/S3Diff, https://huggingface.co/zhangap/S3Diff",
        files=(
            RemoteFile(
                github_file("ArcticHare105/S3Diff", S3DIFF_COMMIT, "assets/mm-realsr/de_net.pth"),
                "S3Diff/de_net.pth",
                git_blob="28b4f4ac13ea0080906dfbc286b054f6dc4251a6",
            ),
        ),
        hub=(HubFiles("zhangap/S3Diff", files=("s3diff.pkl",), place="S3Diff"),),
        uses=("backbone.pretrained_path", "backbone.de_net_path"),
    ),
    Release(
        "grpo-adapter",
        "Chain-of-Zoom's GRPO-trained Qwen2.5-VL-3B adapter, checkpoint-10000 (the later release)",
        "https://github.com/bryanswkim/Chain-of-Zoom (ckpt/VLM_LoRA)",
        files=tuple(
            RemoteFile(
                github_file("bryanswkim/Chain-of-Zoom", "main", f"ckpt/VLM_LoRA/checkpoint-10000/{name}"),
                f"VLM_LoRA/checkpoint-10000/{name}",
                pinned=False,
            )
            for name in ("adapter_config.json", "adapter_model.safetensors")
        ),
        uses=("prompt.adapter",),
    ),
    Release(
        "sd3-medium",
        "Stable Diffusion 3 medium, diffusers layout (backbone=sd3's base; gated: accept its licence, `hf auth login`)",
        "https://huggingface.co/stabilityai/stable-diffusion-3-medium-diffusers",
        hub=(HubFiles("stabilityai/stable-diffusion-3-medium-diffusers"),),
    ),
    Release(
        "sd21-base",
        "Stable Diffusion 2.1-base (backbone=sd21's base)",
        "https://huggingface.co/stabilityai/stable-diffusion-2-1-base",
        hub=(HubFiles("stabilityai/stable-diffusion-2-1-base"),),
    ),
    Release(
        "sd-turbo",
        "SD-Turbo (backbone=s3diff's base)",
        "https://huggingface.co/stabilityai/sd-turbo",
        hub=(HubFiles("stabilityai/sd-turbo"),),
    ),
    Release(
        "qwen2.5-vl-3b",
        "Qwen2.5-VL-3B-Instruct (prompt=vlm's model)",
        "https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct",
        hub=(HubFiles("Qwen/Qwen2.5-VL-3B-Instruct"),),
    ),
)

# option=auto -> (the release that brings it, its path under the weights folder)
AUTO: dict[str, tuple[str, str]] = {
    "backbone.transformer_lora": ("coz-sd3", "SR_LoRA/model_20001.pkl"),
    "backbone.vae_encoder": ("coz-sd3", "SR_VAE/vae_encoder_20001.pt"),
    "backbone.osediff_pkl": ("osediff-sd21", "OSEDiff/osediff.pkl"),
    "backbone.pretrained_path": ("s3diff", "S3Diff/s3diff.pkl"),
    "backbone.de_net_path": ("s3diff", "S3Diff/de_net.pth"),
    "prompt.ram_weights": ("ram", "RAM/ram_swin_large_14m.pth"),
    "prompt.dape_weights": ("dape", "DAPE/DAPE.pth"),
    "prompt.tags": ("dape", "RAM/ram_tag_list.txt"),  # its thresholds file lies beside it
    "prompt.adapter": ("grpo-adapter", "VLM_LoRA/checkpoint-10000"),
}


def release(name: str) -> Release:
    for r in RELEASES:
        if r.name == name:
            return r
    raise KeyError(name)
