"""dasv.features: audio list -> log-mel features -> a feature store (`dasv features`).

    compute.py   one file -> FileFeatures (torch/dsp and io.audio only; also `dasv embed --audio`)
    workers.py   worker processes and the worker-side state; transport.py carries their results
    tuning.py    process-wide tweaks for speed and hygiene (malloc, parent death, pipe size)
    run.py       featurize(): list -> resume/skip -> workers -> ShardWriter -> failed.tsv, with progress
    failed.py    DIR/failed.tsv; summary.py: what `dasv inspect` reports

    from dasv_cli.features.run import featurize
    result = featurize("train.txt", "features", audio_dir="/data/vox", jobs=4)
    result.failed          # [(path, reason), ...], also in features/failed.tsv
"""
