"""dasv.features: audio list -> log-mel features -> a feature store (`dasv features`).

    compute.py   one file -> FileFeatures (dsp and io.audio only; also `dasv embed --audio`)
    workers.py   where files are computed and stored: inline, or worker processes that write their own shards
    tuning.py    process-wide tweaks for speed and hygiene (malloc, parent death)
    run.py       featurize(): list -> resume/skip -> workers -> ShardWriter -> failed.tsv, with progress
    augmented.py `--augment`: each file's augmented copies (KEY#KIND) from one decode, only the missing ones
    parts.py     `--part I/N`: every N-th entry, so N jobs (machines) fill one store at once
    failed.py    DIR/failed.tsv (a part's: failed-pIIIIofNNNN.tsv); summary.py: what `dasv inspect` reports

    from dasv_cli.features.augmented import AugmentOptions
    from dasv_cli.features.parts import parse_part
    from dasv_cli.features.run import featurize
    result = featurize("train.txt", "features", audio_dir="/data/vox", jobs=4)
    result.failed          # [(path, reason), ...], also in features/failed.tsv
    featurize("train.txt", "/shared/features", part=parse_part("3/8"))   # one of 8 cluster jobs
    featurize("train.txt", "features", augment=AugmentOptions("reverb,babble", rir_dir="rirs"))
"""
