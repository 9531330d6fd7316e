"""`--recipe paper|modern`: named presets of training options, applied under the TOML file and the flags.

`paper` changes nothing (the defaults are the paper's). `modern` is what current toolkits (WeSpeaker,
SpeechBrain's ECAPA recipes) train with, on the paper's network: SpecAugment masks, AAM-Softmax
(ArcFace) with s = 32 and m = 0.2 reached by a margin warm-up, Kaiming initialisation, and a
warmed-up, cosine-decayed learning rate. It no longer turns on the stored augmented copies
(`--augmented`): on unseen speakers it did worse with them than without them in both seeds, and
without them it was the best row (README, "What each recipe scores"); augmentation is `--online-augment`, or
`--augmented` where copies are all there is. Its warm-ups
are fractions of --max-steps, so one preset fits a short and a long run: the LR warms up over the
first 5 % of the updates and then decays on a cosine to 1 % of --learning-rate at --max-steps; the
margin grows from 0 over the first 20 %. Any of them can still be set by a flag or in dasv.toml.
"""

from __future__ import annotations

from typing import Any

from dasv_cli.errors import UsageError

RECIPE_NAMES = ("paper", "modern")
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "modern": {"spec_augment": True, "margin_type": "aam", "margin": 0.2, "scale": 32.0,
               "init": "kaiming", "lr_schedule": "cosine", "min_lr_ratio": 0.01},
}
RECIPE_FRACTIONS = {"modern": {"lr_warmup": 0.05, "margin_warmup": 0.2}}


def recipe_values(name: str, max_steps: int) -> dict[str, Any]:
    """The options preset by a recipe (its warm-ups resolved against max_steps)."""
    if name not in RECIPES:
        raise UsageError(f"--recipe {name!r}: choose one of {', '.join(RECIPE_NAMES)}")
    values = dict(RECIPES[name])
    fractions = RECIPE_FRACTIONS.get(name, {})
    if fractions and max_steps < 1:
        raise UsageError(f"--recipe {name} warms up and decays over the run: give --max-steps")
    for key, fraction in fractions.items():
        values[key] = max(1, int(round(fraction * max_steps)))
    return values


__all__ = ["RECIPE_NAMES", "RECIPES", "recipe_values"]
