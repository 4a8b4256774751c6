"""Configuration dataclasses and the registry of named presets.

Config is data: every config round-trips through JSON/YAML (``to_dict`` / ``from_dict``), never
pickles. Presets are tiny registered functions that fill in numbers; adding a size adds a function.

    >>> from magtok import get_config, list_configs
    >>> cfg = get_config("magvit2-17x128-lfq18")
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

LayerSpec = tuple  # tuple of "name" or ("name", int) entries

QUANTIZER_KINDS = ("lfq", "fsq", "vq", "identity")


def _coerce(value, type_str: str, where: str):
    """Coerce a YAML/JSON scalar to the field's declared type (YAML reads ``3e-4`` as a string)."""
    kinds = [t.strip() for t in type_str.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ValueError(f"{where}: a value is required (got null)")
    if "bool" in kinds and isinstance(value, bool):
        return value
    if "bool" in kinds and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    for kind, conv in (("int", int), ("float", float)):
        if kind in kinds and not isinstance(value, bool):
            if isinstance(value, (int, float)) and kind == "float":
                return float(value)
            if isinstance(value, int) and kind == "int":
                return value
            if isinstance(value, float) and kind == "int" and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return conv(value)
                except ValueError:
                    pass
            if not any(k in kinds for k in ("str", "tuple", "dict")):
                raise ValueError(f"{where}: expected {type_str}, got {value!r}")
    return value


def _from_dict(cls, data: dict, path: str):
    """Validate ``data`` for dataclass ``cls``: unknown keys are errors that name the key, and
    scalars are coerced to the declared types (in place)."""
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}"
        )
    for key, value in list(data.items()):
        if isinstance(known[key].type, str) and not isinstance(value, (dict, list, tuple)):
            data[key] = _coerce(value, known[key].type, f"{path}.{key}")
    return known, data


@dataclass
class QuantizerConfig:
    """Quantizer settings. ``kind`` picks LFQ, FSQ, VQ or identity (no quantization).

    LFQ: ``codebook_size`` must be a power of two (2^d codes, one sign bit per channel).
    FSQ: the codebook size is the product of ``levels``.
    VQ: ``codebook_size`` entries of ``codebook_dim`` channels.
    """

    kind: str = "lfq"
    codebook_size: int = 2**18
    num_codebooks: int = 1
    # LFQ
    entropy_loss_weight: float = 0.1
    commitment_loss_weight: float = 0.25
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0
    soft_clamp_input_value: float | None = 10.0
    spherical: bool = False
    codebook_entropy: str = "bit_groups"  # "bit_groups" (memory ~ d) or "exact" (chunked, exact)
    entropy_group_bits: int = 10  # largest bit group for "bit_groups"
    entropy_chunk_codes: int = 4096  # codes per chunk for "exact"
    # FSQ
    levels: tuple = (8, 8, 8, 5, 5, 5)
    # VQ
    codebook_dim: int = 8
    ema: bool = True
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0
    cosine: bool = False

    @property
    def effective_codebook_size(self) -> int:
        if self.kind == "fsq":
            return int(math.prod(self.levels))
        if self.kind == "identity":
            return 1
        return int(self.codebook_size)

    @classmethod
    def from_dict(cls, data: dict, path: str = "quantizer") -> "QuantizerConfig":
        data = dict(data)
        _from_dict(cls, data, path)
        if "levels" in data:
            data["levels"] = tuple(int(v) for v in data["levels"])
        return cls(**data)


def normalize_layers(layers) -> tuple:
    """Turn a layer spec from JSON/YAML (lists) into the canonical tuple form."""
    out = []
    for entry in layers:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
            out.append(tuple([entry[0], *[int(p) for p in entry[1:]]]))
        else:
            raise ValueError(
                f"layer spec entry {entry!r} is neither a name nor a (name, int) pair; "
                "write e.g. 'residual' or ['consecutive_residual', 2]"
            )
    return tuple(out)


@dataclass
class TokenizerConfig:
    """Everything needed to build a :class:`magtok.VideoTokenizer`.

    ``layers`` is the encoder's layer spec (the decoder mirrors it): names or (name, int) pairs,
    e.g. ``("residual", "compress_space", ("consecutive_residual", 2), "compress_time")``.
    ``frames`` and ``image_size`` are the preset's nominal input size (used for the compression
    ratio and as defaults); the tokenizer accepts any 1 + k*r_t frames and any multiple of r_s.
    """

    name: str = "custom"
    channels: int = 3
    layers: tuple = ("residual", "compress_space", "compress_time", "residual")
    init_dim: int = 64
    max_dim: int | None = None
    input_conv_kernel_size: tuple = (7, 7, 7)
    output_conv_kernel_size: tuple = (3, 3, 3)
    residual_conv_kernel_size: int = 3
    pad_mode: str = "constant"  # "constant" (zeros) or "replicate"
    attn_heads: int = 8
    attn_dim_head: int = 32
    num_memory_kv: int = 4
    linear_attn_heads: int = 16
    linear_attn_dim_head: int = 8
    dim_cond: int | None = None
    dim_cond_expansion_factor: float = 4.0
    separate_first_frame_encoding: bool = False
    antialias: bool = False  # binomial blur around down/upsampling
    time_downsample_left_pad: int = 1  # see magtok.layers.resample.TimeDownsample2x
    prequant_norm: str = "layernorm"  # norm right before the quantizer: "layernorm", "groupnorm" (no affine), "none"
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    frames: int = 17
    image_size: tuple = (128, 128)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = [list(e) if isinstance(e, tuple) else e for e in self.layers]
        return json.loads(json.dumps(d))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, path: str = "tokenizer") -> "TokenizerConfig":
        data = dict(data)
        _from_dict(cls, data, path)
        if "quantizer" in data and not isinstance(data["quantizer"], QuantizerConfig):
            data["quantizer"] = QuantizerConfig.from_dict(data["quantizer"], f"{path}.quantizer")
        if "layers" in data:
            data["layers"] = normalize_layers(data["layers"])
        for key in ("input_conv_kernel_size", "output_conv_kernel_size"):
            if key in data:
                v = data[key]
                data[key] = tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),) * 3
        if "image_size" in data:
            v = data["image_size"]
            data["image_size"] = tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v), int(v))
        return cls(**data)

    def replace(self, **changes) -> "TokenizerConfig":
        return dataclasses.replace(copy.deepcopy(self), **changes)


# ----------------------------------------------------------------------------- presets

_PRESETS: dict[str, Callable[[], TokenizerConfig]] = {}


def register_config(name: str):
    """Decorator: register a function returning a :class:`TokenizerConfig` under ``name``."""

    def wrap(fn: Callable[[], TokenizerConfig]):
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = fn
        return fn

    return wrap


def list_configs() -> list[str]:
    """Names of all registered presets."""
    return sorted(_PRESETS)


def get_config(name: str) -> TokenizerConfig:
    """A fresh copy of the preset ``name``."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {list_configs()}")
    cfg = _PRESETS[name]()
    cfg.name = name
    return cfg


@register_config("tiny")
def _tiny() -> TokenizerConfig:
    """For tests: 5 frames at 16x16 -> 3x8x8 codes, 2^8 LFQ codes, a few thousand parameters."""
    return TokenizerConfig(
        layers=("residual", "compress_space", "compress_time", "residual"),
        init_dim=8,
        input_conv_kernel_size=(3, 3, 3),
        output_conv_kernel_size=(3, 3, 3),
        attn_heads=2,
        attn_dim_head=8,
        linear_attn_heads=2,
        linear_attn_dim_head=4,
        quantizer=QuantizerConfig(kind="lfq", codebook_size=2**8, diversity_gamma=1.0),
        frames=5,
        image_size=(16, 16),
    )


@register_config("tiny-fsq")
def _tiny_fsq() -> TokenizerConfig:
    cfg = _tiny()
    cfg.quantizer = QuantizerConfig(kind="fsq", levels=(8, 5, 5, 5))
    return cfg


@register_config("tiny-vq")
def _tiny_vq() -> TokenizerConfig:
    cfg = _tiny()
    cfg.quantizer = QuantizerConfig(kind="vq", codebook_size=256, codebook_dim=8)
    return cfg


@register_config("demo")
def _demo() -> TokenizerConfig:
    """The demo preset: 9 frames at 64x64 -> 3x8x8 codes (r_t=4, r_s=8), 2^12 LFQ codes.

    Small enough to overfit a real clip on 2 CPU cores in minutes.
    """
    return TokenizerConfig(
        layers=(
            "residual",
            ("compress_space", 64),
            "residual",
            ("compress_space", 128),
            ("compress_time", 128),
            "residual",
            ("compress_space", 128),
            ("compress_time", 128),
            "residual",
        ),
        init_dim=32,
        max_dim=128,
        input_conv_kernel_size=(3, 3, 3),
        output_conv_kernel_size=(3, 3, 3),
        quantizer=QuantizerConfig(kind="lfq", codebook_size=2**12, entropy_loss_weight=0.1,
                                  diversity_gamma=1.0, commitment_loss_weight=0.25),
        frames=9,
        image_size=(64, 64),
    )


@register_config("small")
def _small() -> TokenizerConfig:
    """magtok-small's preset: 17 frames at 64x64 -> 5x16x16 codes (r_t=4, r_s=4), FSQ 8-8-8-6-5.

    Chosen by the measured short runs in BENCHMARKS.md ("Recipe"): spatial ratio 4 beat 8 and FSQ
    (15360 codes, 13.9 bits per token) beat LFQ 2^14 at equal bits. About 2.5 M parameters,
    convolutions only, so a training step at 17x64x64, batch 2 costs about 1.3 CPU-seconds in bf16.
    """
    return TokenizerConfig(
        layers=(
            "residual",
            ("compress_space", 64),
            "residual",
            ("compress_space", 128),
            ("compress_time", 128),
            "residual",
            ("compress_time", 128),
            "residual",
        ),
        init_dim=32,
        max_dim=128,
        input_conv_kernel_size=(3, 3, 3),
        output_conv_kernel_size=(3, 3, 3),
        quantizer=QuantizerConfig(kind="fsq", levels=(8, 8, 8, 6, 5)),
        frames=17,
        image_size=(64, 64),
    )


@register_config("magvit2-17x128-lfq18")
def _magvit2_17x128_lfq18() -> TokenizerConfig:
    """MagViT2's video setting: 17 frames at 128x128 -> 5x16x16 codes, 2^18 LFQ codes.

    Channel widths 128-256-256-512 with two residual units per stage (r_s = 8, r_t = 4).
    """
    return TokenizerConfig(
        layers=(
            ("consecutive_residual", 2),
            ("compress_space", 256),
            ("consecutive_residual", 2),
            ("compress_space", 256),
            ("compress_time", 256),
            ("consecutive_residual", 2),
            ("compress_space", 512),
            ("compress_time", 512),
            ("consecutive_residual", 2),
        ),
        init_dim=128,
        max_dim=512,
        input_conv_kernel_size=(3, 3, 3),
        output_conv_kernel_size=(3, 3, 3),
        quantizer=QuantizerConfig(kind="lfq", codebook_size=2**18),
        frames=17,
        image_size=(128, 128),
    )


# ----------------------------------------------------------------------------- training config


@dataclass
class DataConfig:
    """Where the training and validation videos come from and how samples are cut."""

    train_dir: str = ""
    val_dir: str = ""
    # a manifest (`magtok manifest`, Parquet) of the videos: train/val are built from its rows without
    # probing any file; rows under val_dir are validation, the others (or those under train_dir) training
    manifest: str = ""
    frames: int | None = None  # default: the tokenizer config's frames
    size: tuple | None = None  # default: the tokenizer config's image_size
    frame_stride: int = 1
    target_fps: float | None = None
    images: bool = True
    image_batch_ratio: float = 0.0  # share of steps that train on one-frame image batches
    num_workers: int = 0
    val_clips: int = 4
    # photos that become clips of camera motion (magtok.data.augment): the share of training clips
    # that are animated photos (0 = off), where the photos are (default: train_dir) and the motion
    still_motion: float = 0.0
    stills_dir: str = ""
    motion: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    recon: str = "l1"  # "l1" or "mse"
    recon_weight: float = 1.0
    perceptual: str = "lpips"  # "lpips", "vgg" or "none"
    perceptual_weight: float = 0.1
    perceptual_frames: int = 2  # frames per clip scored by the perceptual loss
    vgg_weights: str | None = None  # path to torchvision's vgg16-397923af.pth, optional
    quantizer_weight: float = 1.0
    adversarial_weight: float = 0.1
    discriminator: str = "frame"  # "frame", "spacetime", "multiscale_frame", "multiscale_spacetime", "none"
    discriminator_dim: int = 32
    gan_loss: str = "hinge"  # "hinge" or "non_saturating"
    adversarial_start_step: int = 2000
    r1_weight: float = 0.0
    lecam_weight: float = 0.0
    adaptive_weight: bool = True


@dataclass
class OptimConfig:
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: tuple = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass
class TrainConfig:
    """A whole training run: model, data, losses, optimisation, logging and checkpoints."""

    model: str = "demo"  # preset name ...
    model_overrides: dict = field(default_factory=dict)  # ... with these TokenizerConfig fields changed
    # fine-tune: start a new run from these weights (a bundled name such as "magtok-small" or a folder
    # written by save_pretrained); the architecture must equal the one of model/model_overrides.
    # A resumed run restores its checkpoint instead.
    init_from: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/demo"
    steps: int = 1000
    max_minutes: float | None = None  # stop (and save) when the wall-clock budget is spent
    batch_size: int = 2
    seed: int = 0
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, none on CPU), "no", "bf16"
    ema_decay: float = 0.999
    ema_start_step: int = 0
    log_every: int = 10
    val_every: int = 200
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 5
    export_ema: bool = True

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, path: str = "config") -> "TrainConfig":
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        data = dict(data)
        if data.get("mixed_precision") is False:   # YAML 1.1 reads an unquoted `no` as false
            data["mixed_precision"] = "no"
        _from_dict(cls, data, path)
        sub = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig}
        for key, klass in sub.items():
            if key in data and isinstance(data[key], dict):
                section = dict(data[key])
                _from_dict(klass, section, f"{path}.{key}")
                data[key] = klass(**section)
        cfg = cls(**data)
        if isinstance(cfg.optim.betas, list):
            cfg.optim.betas = tuple(cfg.optim.betas)
        return cfg

    def tokenizer_config(self) -> TokenizerConfig:
        base = get_config(self.model).to_dict()
        for key, value in self.model_overrides.items():
            if key not in base:
                raise ValueError(
                    f"model_overrides: unknown tokenizer key {key!r}; known keys: {sorted(base)}"
                )
            if key == "quantizer" and isinstance(value, dict):
                base["quantizer"].update(value)
            else:
                base[key] = value
        return TokenizerConfig.from_dict(base)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars) to a nested dict."""
    import yaml

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                node[p] = {} if p not in node else node[p]
                if not isinstance(node[p], dict):
                    raise ValueError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return data


def asdict_any(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
