"""A configuration as TOML text that `dasv train --config` reads back unchanged: the resolved run
(printed at start, and on stdout by `--dry-run`) and a network's options (`dasv model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dasv_cli.model import config as model_config
from dasv_cli.train.config import MODEL_FIELDS, PATH_FIELDS, TrainConfig


def format_config(cfg: TrainConfig, source: Path | None = None) -> str:
    """The resolved config as TOML that `--config` reads back to the same config (printed at start,
    and on stdout by --dry-run): paths made absolute, unset options left out, `resume` (a flag only)
    too."""
    import os

    from dasv_cli.io.tomlwrite import dumps

    items = {k: v for k, v in cfg.to_dict().items() if k != "resume"}
    for name in PATH_FIELDS:
        if items.get(name):
            items[name] = os.path.abspath(os.path.expanduser(items[name]))
    head = f"defaults <- {source} <- flags" if source else "defaults <- recipe <- dasv.toml or --config <- flags"
    return dumps(items, [f"dasv train: the resolved config ({head})"])


def network_toml(model: dict[str, Any]) -> str:
    """A network's options (a ModelConfig dict) as TOML for `dasv train --config`; the sizes that
    training takes from its data (bands, speakers) are shown as comments."""
    from dasv_cli.io.tomlwrite import dumps

    data = [f"{f.name} = {model[f.name]!r}: from the data when training"
            for f in model_config.options("data") if f.name in model]
    return dumps({k: model[k] for k in MODEL_FIELDS if k in model},
                 ["dasv model: the network's options (dasv train --config reads them)", *data])


__all__ = ["format_config", "network_toml"]
