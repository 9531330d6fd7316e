"""Training configuration: one dataclass whose defaults are the paper's recipe, filled from TOML and flags.

Resolution order (later wins): the defaults below (the paper's recipe), then the preset of
`--recipe` (`paper`: nothing changes; `modern`: RECIPES below), then `--config FILE.toml` (or
`./dasv.toml` when no `--config` is given and the file exists), then the command-line flags the user
actually typed. So flags > toml > recipe > defaults: `--recipe modern --margin 0.3` is the modern
recipe with another margin, and `recipe = "modern"` may itself sit in the TOML file.
Relative paths in a TOML file are taken relative to that file's directory, so a prepared directory
with a `dasv.toml` trains with `dasv train --gpus 2` from anywhere inside it.

The option set mirrors the original research tool (miquelindia90/DoubleMHA, scripts/train.py) with
its defaults; names follow the CLI (`kernel_size` here is `--kernel-size` there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dasv_cli.errors import InputError, UsageError
from dasv_cli.io.paths import require_file
from dasv_cli.model import config as model_config
from dasv_cli.train.recipe import RECIPE_NAMES, recipe_values
from dasv_cli.train.schedule import SCHEDULES

OPTIMIZERS = ("Adam", "SGD", "RMSprop")
NORMS = ("cmn", "cmvn", "none")
PRECISIONS = ("fp32", "bf16")

# Fields that are file-system paths (resolved against the TOML file's directory).
PATH_FIELDS = ("train_labels", "features", "valid_clients", "valid_impostors", "valid_trials",
               "valid_features", "out", "init_from")

# The network options a run takes from its flags: every ModelConfig option but the two that come
# from the data (bands from the feature store, speakers from the labels). A resumed run keeps them.
NETWORK_OPTIONS = model_config.options("shape", "training")
MODEL_FIELDS = tuple(f.name for f in NETWORK_OPTIONS)

DEFAULT_TOML = "dasv.toml"


def _with_network_options(cls: type) -> type:
    """Give the class ModelConfig's network options as its own fields, after `out` (so they sit in
    the same flat namespace as every other option: TOML keys, flags, the checkpoint's config)."""
    notes: dict[str, Any] = {}
    for name, kind in cls.__annotations__.items():
        notes[name] = kind
        if name == "out":
            for f in NETWORK_OPTIONS:
                notes[f.name] = f.type
                setattr(cls, f.name, dataclasses.field(default=f.default, metadata=f.metadata))
    cls.__annotations__ = notes
    return cls


@dataclass
@_with_network_options
class TrainConfig:
    """Everything `dasv train` needs; defaults are the paper's (India et al., ICASSP 2021)."""

    # data
    train_labels: str | None = None
    features: str | None = None
    valid_clients: str | None = None
    valid_impostors: str | None = None
    valid_trials: str | None = None
    valid_features: str | None = None
    out: str | None = None
    init_from: str | None = None  # a checkpoint whose weights start this (new) run
    recipe: str = "paper"  # paper | modern: a preset of the options below (RECIPES)
    # network: ModelConfig's options are inserted here (front_end, kernel_size, ..., numerics)
    # examples
    window_seconds: float = 3.5
    random_slicing: bool = False
    norm: str = "cmn"
    augmented: bool = False  # also draw from the stored augmented copies (KEY#KIND) of the training keys
    spec_augment: bool = False  # SpecAugment time and frequency masks on every training batch
    online_augment: str | None = None  # "reverb,noise,music,babble": each batch augmented from waveform windows
    augment_prob: float = 0.6  # with online_augment: the chance that a window is augmented (one drawn kind)
    noise_store: str | None = None  # waveform store (dasv features --audio-only) of noise (and music/ keys)
    rir_store: str | None = None  # waveform store of room impulse responses
    # optimisation
    optimizer: str = "Adam"
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine | exponential (to min_lr_ratio at max_steps)
    lr_warmup: int = 0  # updates of linear LR warm-up
    min_lr_ratio: float = 0.01  # the decayed LR at max_steps, as a fraction of learning_rate
    batch_size: int = 64
    grad_accumulation: int = 2
    max_epochs: int = 1_000_000
    max_steps: int = 0  # 0: no limit (the run ends by early stopping or max_epochs)
    max_minutes: float = 0.0  # 0: no limit; else stop (and save) at the first update after this wall time
    early_stopping: int = 25  # stop after more than this many validations without gain; -1: never
    lr_patience: int = 15  # halve the LR each time this many validations pass without gain; 0: never
    max_nonfinite: int = 20  # consecutive non-finite batches before the run is declared diverged
    # reporting
    print_every: int = 1000
    validate_every: int = 10000
    save_every: int = 1000  # last.pt every N updates (also at every validation and at the end)
    # machinery
    workers: int = 2
    seed: int = 1234
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gpus: int = 0
    procs: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        # an unset K is the front-end's published size, so the resolved config (printed, stored) says it
        if self.kernel_size is None:
            self.kernel_size = model_config.DEFAULT_KERNEL_SIZE.get(self.front_end)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (stored in every checkpoint, printed at start)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def window_frames(self) -> int:
        """Frames per training window (10 ms hop: seconds x 100)."""
        return int(round(self.window_seconds * 100))

    def world_size_requested(self) -> int:
        return max(self.gpus, self.procs, 1)

    def check(self) -> None:
        """Option values that cannot work: one-line UsageError each."""
        choices = {f.name: f.metadata["choices"] for f in NETWORK_OPTIONS if f.metadata["choices"]}
        choices.update(optimizer=OPTIMIZERS, norm=NORMS, precision=PRECISIONS, recipe=RECIPE_NAMES,
                       lr_schedule=SCHEDULES)
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: choose one of {', '.join(allowed)}")
        # network sizes (every integer network option) and counts must be positive
        positive = [f.name for f in NETWORK_OPTIONS if f.metadata["type"] is int and f.name != "margin_warmup"]
        positive += ["batch_size", "grad_accumulation", "max_epochs", "print_every", "validate_every",
                     "save_every", "max_nonfinite"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        for name in ("max_steps", "workers", "gpus", "procs", "lr_patience", "lr_warmup", "margin_warmup"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative (got {getattr(self, name)})")
        if self.early_stopping < -1:
            raise UsageError(f"--early-stopping must be -1 (never) or a count (got {self.early_stopping})")
        if not 0.0 <= self.mask_prob < 1.0:
            raise UsageError(f"--mask-prob must be in [0, 1) (got {self.mask_prob})")
        if not 0.0 <= self.augment_prob <= 1.0:
            raise UsageError(f"--augment-prob must be in [0, 1] (got {self.augment_prob})")
        if self.online_augment:
            from dasv_cli.augment.online import parse_kinds

            parse_kinds(self.online_augment)
        elif self.noise_store or self.rir_store:
            raise UsageError("--noise-store and --rir-store go with --online-augment KINDS")
        if self.max_minutes < 0:
            raise UsageError(f"--max-minutes must not be negative (got {self.max_minutes})")
        if self.window_seconds <= 0:
            raise UsageError(f"--window-seconds must be positive (got {self.window_seconds})")
        if self.learning_rate <= 0:
            raise UsageError(f"--learning-rate must be positive (got {self.learning_rate})")
        if not 0.0 < self.min_lr_ratio <= 1.0:
            raise UsageError(f"--min-lr-ratio must be in (0, 1] (got {self.min_lr_ratio})")
        if self.lr_schedule != "constant" and not self.max_steps:
            raise UsageError(f"--lr-schedule {self.lr_schedule} decays until --max-steps; give --max-steps")
        if self.lr_schedule != "constant" and self.lr_warmup >= self.max_steps:
            raise UsageError(f"--lr-warmup {self.lr_warmup} leaves no update to decay over (--max-steps {self.max_steps})")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must not be negative (got {self.weight_decay})")
        if self.gpus and self.procs:
            raise UsageError("--gpus and --procs exclude each other (GPUs use NCCL, --procs is CPU with gloo)")
        if self.gpus and self.device == "cpu":
            raise UsageError("--gpus N trains on GPUs; it cannot be combined with --device cpu")
        if self.procs and self.device not in ("auto", "cpu"):
            raise UsageError("--procs N trains on the CPU; use --gpus N for GPUs")

    def check_paths(self) -> None:
        """The paths training cannot start without (called after TOML + flags are merged)."""
        missing = [flag for flag, value in (("--train-labels", self.train_labels),
                                            ("--features", self.features), ("-o/--out", self.out))
                   if not value]
        if missing:
            raise UsageError(
                f"missing {', '.join(missing)} (give them as flags, in --config FILE.toml, or in ./{DEFAULT_TOML})"
            )
        has_pair = bool(self.valid_clients) or bool(self.valid_impostors)
        if has_pair and not (self.valid_clients and self.valid_impostors):
            raise UsageError("--valid-clients and --valid-impostors go together (same- and different-speaker pairs)")
        if has_pair and self.valid_trials:
            raise UsageError("give either --valid-trials or --valid-clients/--valid-impostors, not both")

    @property
    def has_validation(self) -> bool:
        return bool(self.valid_trials or (self.valid_clients and self.valid_impostors))


def _load_toml_module():
    try:
        import tomllib  # Python >= 3.11

        return tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli  # type: ignore[import-not-found]

            return tomli
        except ModuleNotFoundError:
            return None


_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check a TOML value against the field's type; ints are accepted where floats are expected."""
    kind = _TYPES[name].replace(" ", "")
    if kind in ("str|None", "str"):
        if not isinstance(value, str):
            raise InputError(f"{where}: '{name}' must be a string (got {type(value).__name__})")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{where}: '{name}' must be true or false (got {value!r})")
        return value
    if kind in ("int", "int|None"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: '{name}' must be an integer (got {value!r})")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: '{name}' must be a number (got {value!r})")
        return float(value)
    raise AssertionError(f"unhandled field type {kind}")  # pragma: no cover


def read_toml(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file: flat `key = value` or under a `[train]` table; dashes or underscores.

    Unknown keys and wrongly typed values are one-line errors naming the file (and the key).
    Relative paths are resolved against the file's directory.
    """
    path = require_file(path, "a TOML config file", "no such config file")
    toml = _load_toml_module()
    if toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise InputError(f"{path}: reading TOML needs Python >= 3.11 or the 'tomli' package (pip install tomli)")
    try:
        with path.open("rb") as fh:
            data = toml.load(fh)
    except toml.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text") from exc
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    known = set(_TYPES)
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        name = raw_key.replace("-", "_")
        if isinstance(value, dict):
            raise InputError(f"{path}: unexpected table [{raw_key}] (options go at the top level or under [train])")
        if name == "resume":
            raise InputError(f"{path}: 'resume' is a command-line flag only (dasv train --resume)")
        if name not in known:
            close = _closest(name, known)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise InputError(f"{path}: unknown option '{raw_key}'{hint}")
        value = _coerce(name, value, str(path))
        if name in PATH_FIELDS:
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() else (path.parent / p))
        out[name] = value
    return out


def _closest(name: str, known: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    return match[0] if match else None


def resolve_config(flags: dict[str, Any], config_file: str | Path | None = None,
                   cwd: str | Path | None = None) -> tuple[TrainConfig, Path | None]:
    """Defaults <- recipe <- TOML (`config_file`, else `cwd/dasv.toml` when present) <- flags given.

    `flags` holds only the options the user typed (None values are ignored). Returns the config and
    the TOML file that was read (or None).
    """
    source: Path | None = None
    if config_file is not None:
        source = Path(config_file)
    else:
        candidate = Path(cwd if cwd is not None else ".") / DEFAULT_TOML
        if candidate.is_file():
            source = candidate
    values: dict[str, Any] = read_toml(source) if source is not None else {}
    for name, value in flags.items():
        if name not in _TYPES:
            raise AssertionError(f"unknown flag field {name}")  # pragma: no cover - programming error
        if value is not None:
            values[name] = value
    if not values.get("resume"):  # a resumed run keeps its stored (already resolved) options
        preset = recipe_values(values.get("recipe", "paper"), int(values.get("max_steps", 0)))
        values = {**preset, **values}
    cfg = TrainConfig(**values)
    cfg.check()
    return cfg, source


def config_from_dict(data: dict[str, Any], where: str = "checkpoint") -> TrainConfig:
    """A TrainConfig from a stored dict (a checkpoint's config['train']); unknown keys are refused."""
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise InputError(f"{where}: unknown training options {', '.join(unknown)} (written by a newer dasv?)")
    return TrainConfig(**data)


def model_config_dict(cfg: TrainConfig, num_speakers: int, n_mels: int = 80) -> dict[str, Any]:
    """The ModelConfig fields (network contract): the run's network options and the data's sizes."""
    return {**{name: getattr(cfg, name) for name in MODEL_FIELDS}, "n_mels": n_mels, "num_speakers": num_speakers}


__all__ = ["TrainConfig", "read_toml", "resolve_config", "config_from_dict", "model_config_dict", "DEFAULT_TOML", "MODEL_FIELDS", "NETWORK_OPTIONS", "PATH_FIELDS"]
