"""`--augmented`: the training set grows by the stored augmented copies of its utterances.

`dasv features --augment` stores each copy beside its clean utterance under a derived key `KEY#KIND`
(dasv_cli.augment.keys). A copy whose clean key is in the label file joins the training set with
the clean utterance's speaker, except speed-perturbed copies: they are new speaker classes, as in
WeSpeaker (`augmented_label`: class label + n x i for n clean classes), named `NAME#speed0.9` where
the label file gave names. Copies of utterances that are not being trained on are left out, and
validation and `dasv embed` read only the keys their lists name, so no copy reaches them unasked.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from dasv_cli import progress
from dasv_cli.augment.keys import augmented_label, augmented_speaker, num_classes, parse_key, speeds_in
from dasv_cli.io.lists import Labels


def with_copies(labels: Labels, store_keys: Iterable[str], where: str = "the feature store") -> Labels:
    """`labels` with every stored copy of a labelled key added (sorted by key after the clean ones)."""
    index = {k: i for i, k in enumerate(labels.keys)}
    copies = sorted((a for a in (parse_key(k) for k in store_keys) if a is not None and a.clean in index),
                    key=lambda a: a.key)
    if not copies:
        progress.warn(f"--augmented: {where} holds no augmented copies (KEY#KIND) of the training keys; "
                      "training on the clean utterances only (make copies with `dasv features --augment`)")
        return labels
    n = labels.num_classes
    speeds = speeds_in(a.kind for a in copies)
    extra = np.array([augmented_label(int(labels.labels[index[a.clean]]), a.kind, n, speeds) for a in copies],
                     dtype=np.int64)
    names = labels.names
    if names is not None:
        names = list(names) + [augmented_speaker(name, kind) for kind in speeds for name in labels.names]
    kinds = sorted({a.kind for a in copies})
    progress.log(f"--augmented: {len(copies)} stored copies ({', '.join(kinds)}) join {len(labels.keys)} clean "
                 f"utterances; {num_classes(n, speeds)} speaker classes")
    return Labels(keys=labels.keys + [a.key for a in copies], labels=np.concatenate([labels.labels, extra]),
                  names=names, num_classes=num_classes(n, speeds), lines=list(labels.lines))


__all__ = ["with_copies"]
