"""`dasv train`: train a speaker embedding extractor with the paper's recipe (thin CLI layer).

Options left out on the command line come from `--config FILE.toml` (or `./dasv.toml`), then from
the paper's defaults. Engine imports happen inside the command so `dasv --help` stays fast.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

EPILOG = """[bold]Examples[/bold]

  dasv features train.lst --audio-dir wav -o feats
  dasv train --train-labels train_labels.txt --features feats \\
      --valid-clients clients.ndx --valid-impostors impostors.ndx -o runs/paper

  # a small CPU run; then continue it after an interruption
  dasv train --train-labels labels.txt --features feats --valid-trials trials.txt \\
      --kernel-size 64 --heads 8 --embedding-size 64 --window-seconds 2 --batch-size 16 \\
      --max-steps 2000 --validate-every 200 --print-every 50 -o runs/small
  dasv train -o runs/small --resume

  # online augmentation: waveforms kept beside the features, noise and RIRs as waveform stores
  dasv features train.lst --keep-audio -o feats
  find musan/noise musan/music -name '*.wav' | dasv features - --audio-only -o noise
  dasv train --config paper.toml --online-augment reverb,noise,music,babble --augment-prob 0.6 \\
      --noise-store noise --rir-store rirs-store

  # 2 GPUs with DDP (NCCL); or 4 CPU processes (gloo); or several nodes with torchrun
  dasv train --config paper.toml --gpus 2 --precision bf16
  dasv train --config paper.toml --procs 4
  torchrun --nnodes 2 --nproc-per-node 8 -m dasv_cli train --config paper.toml

dasv.toml / --config FILE.toml hold the same options (underscores or dashes), e.g.
  train_labels = "labels.txt"
  features = "feats"
  valid_trials = "trials.txt"
  out = "runs/paper"
  precision = "bf16"

Outputs in OUT: last.pt and best.pt (atomic), metrics.jsonl (one JSON line per report: step with
loss or eer), tb/ (TensorBoard scalars)."""


def register(app: typer.Typer) -> None:
    from dasv_cli.cli.network_options import network_options
    from dasv_cli.train.config import TrainConfig

    d = TrainConfig()

    def dflt(name: str) -> str:
        return f" [default: {getattr(d, name)}]"

    @app.command("train", epilog=EPILOG, no_args_is_help=False)
    @network_options("shape", "training", after="config", panel="Network")
    def train_command(
        train_labels: Optional[str] = typer.Option(None, "--train-labels", metavar="FILE", help="Train labels: 'key label [None|-1]' (0..N-1) or 'key speaker_name'.", rich_help_panel="Data"),
        features: Optional[str] = typer.Option(None, "--features", metavar="DIR", help="Feature store directory (from `dasv features`).", rich_help_panel="Data"),
        valid_clients: Optional[str] = typer.Option(None, "--valid-clients", metavar="FILE", help="Validation same-speaker pairs 'key1 key2'.", rich_help_panel="Data"),
        valid_impostors: Optional[str] = typer.Option(None, "--valid-impostors", metavar="FILE", help="Validation different-speaker pairs 'key1 key2'.", rich_help_panel="Data"),
        valid_trials: Optional[str] = typer.Option(None, "--valid-trials", metavar="FILE", help="Validation trials, VoxCeleb '1|0 key1 key2' or Kaldi 'key1 key2 target|nontarget'.", rich_help_panel="Data"),
        valid_features: Optional[str] = typer.Option(None, "--valid-features", metavar="DIR", help="Feature store of the validation utterances [default: --features].", rich_help_panel="Data"),
        out: Optional[str] = typer.Option(None, "-o", "--out", metavar="DIR", help="Output directory (checkpoints, metrics.jsonl, tb/).", rich_help_panel="Data"),
        config: Optional[str] = typer.Option(None, "--config", metavar="FILE.toml", help="TOML file with options [default: ./dasv.toml when present].", rich_help_panel="Data"),
        recipe: Optional[str] = typer.Option(None, "--recipe", metavar="paper|modern", help="paper | modern: a preset under dasv.toml and the flags (modern: --spec-augment, AAM-Softmax m=0.2 s=32 with margin warm-up, Kaiming init, LR warm-up + cosine decay)." + dflt("recipe"), rich_help_panel="Data"),
        init_from: Optional[str] = typer.Option(None, "--init-from", metavar="CKPT", help="Start a new run (step 0) from this checkpoint's weights, e.g. large-margin fine-tuning of best.pt with longer windows; the classifier is re-drawn when the speakers differ.", rich_help_panel="Data"),
        augmented: Optional[bool] = typer.Option(None, "--augmented/--no-augmented", help="Also train on the stored augmented copies (KEY#KIND from `dasv features --augment`) of the labelled keys." + dflt("augmented"), rich_help_panel="Data"),
        online_augment: Optional[str] = typer.Option(None, "--online-augment", metavar="KINDS", help="Augment every training window afresh from its waveform (a store made with `dasv features --keep-audio`): a comma list of reverb, noise, music, babble (or all); then the log-mel on the training device.", rich_help_panel="Data"),
        augment_prob: Optional[float] = typer.Option(None, "--augment-prob", help="With --online-augment: the chance that a window gets one drawn kind." + dflt("augment_prob"), rich_help_panel="Data"),
        noise_store: Optional[str] = typer.Option(None, "--noise-store", metavar="DIR", help="Waveform store of noises for noise/music (`dasv features LIST --audio-only`; keys under music/ are music).", rich_help_panel="Data"),
        rir_store: Optional[str] = typer.Option(None, "--rir-store", metavar="DIR", help="Waveform store of room impulse responses for reverb (e.g. of `dasv rirs` output).", rich_help_panel="Data"),
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help="Adam | SGD | RMSprop." + dflt("optimizer"), rich_help_panel="Optimisation"),
        learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="Initial learning rate." + dflt("learning_rate"), rich_help_panel="Optimisation"),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay." + dflt("weight_decay"), rich_help_panel="Optimisation"),
        lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="constant | cosine | exponential: the LR decays to --min-lr-ratio x the LR at --max-steps." + dflt("lr_schedule"), rich_help_panel="Optimisation"),
        lr_warmup: Optional[int] = typer.Option(None, "--lr-warmup", help="Updates of linear LR warm-up (0: none)." + dflt("lr_warmup"), rich_help_panel="Optimisation"),
        min_lr_ratio: Optional[float] = typer.Option(None, "--min-lr-ratio", help="The decayed LR at --max-steps, as a fraction of --learning-rate." + dflt("min_lr_ratio"), rich_help_panel="Optimisation"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per batch, per process." + dflt("batch_size"), rich_help_panel="Optimisation"),
        grad_accumulation: Optional[int] = typer.Option(None, "--grad-accumulation", help="Batches per update." + dflt("grad_accumulation"), rich_help_panel="Optimisation"),
        window_seconds: Optional[float] = typer.Option(None, "--window-seconds", help="Training window length (frames = seconds x 100)." + dflt("window_seconds"), rich_help_panel="Optimisation"),
        random_slicing: Optional[bool] = typer.Option(None, "--random-slicing/--no-random-slicing", help="Cut each batch to a random length between 2 s and the window, as the original's --randomSlicing." + dflt("random_slicing"), rich_help_panel="Optimisation"),
        spec_augment: Optional[bool] = typer.Option(None, "--spec-augment/--no-spec-augment", help="SpecAugment time and frequency masks on every training batch, on the device." + dflt("spec_augment"), rich_help_panel="Optimisation"),
        norm: Optional[str] = typer.Option(None, "--norm", help="cmn | cmvn | none, with the stored per-utterance statistics." + dflt("norm"), rich_help_panel="Optimisation"),
        max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Passes over the training list." + dflt("max_epochs"), rich_help_panel="Optimisation"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many updates (0: no limit)." + dflt("max_steps"), rich_help_panel="Optimisation"),
        max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop (and save) after this many minutes of wall time (0: no limit)." + dflt("max_minutes"), rich_help_panel="Optimisation"),
        early_stopping: Optional[int] = typer.Option(None, "--early-stopping", help="Stop after more than this many validations without gain (-1: never)." + dflt("early_stopping"), rich_help_panel="Optimisation"),
        lr_patience: Optional[int] = typer.Option(None, "--lr-patience", help="Halve the LR every this many validations without gain (0: never)." + dflt("lr_patience"), rich_help_panel="Optimisation"),
        max_nonfinite: Optional[int] = typer.Option(None, "--max-nonfinite", help="Stop after this many non-finite batches in a row." + dflt("max_nonfinite"), rich_help_panel="Optimisation"),
        print_every: Optional[int] = typer.Option(None, "--print-every", help="Report loss/accuracy every N updates." + dflt("print_every"), rich_help_panel="Reporting"),
        validate_every: Optional[int] = typer.Option(None, "--validate-every", help="Validate every N updates." + dflt("validate_every"), rich_help_panel="Reporting"),
        save_every: Optional[int] = typer.Option(None, "--save-every", help="Write last.pt every N updates (and at every validation)." + dflt("save_every"), rich_help_panel="Reporting"),
        workers: Optional[int] = typer.Option(None, "--workers", help="Data loader processes per rank." + dflt("workers"), rich_help_panel="Machinery"),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (same seed, data and machine -> same checkpoint)." + dflt("seed"), rich_help_panel="Machinery"),
        precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16 (autocast)." + dflt("precision"), rich_help_panel="Machinery"),
        compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the network." + dflt("compile"), rich_help_panel="Machinery"),
        channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last convolutions (a GPU; or a CPU with bf16, where it is faster)." + dflt("channels_last"), rich_help_panel="Machinery"),
        device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N." + dflt("device"), rich_help_panel="Machinery"),
        gpus: Optional[int] = typer.Option(None, "--gpus", help="Train on N GPUs with DDP (NCCL).", rich_help_panel="Machinery"),
        procs: Optional[int] = typer.Option(None, "--procs", help="Train with N CPU processes with DDP (gloo).", rich_help_panel="Machinery"),
        resume: bool = typer.Option(False, "--resume", help="Continue OUT/last.pt exactly (model, optimizer, step, RNG).", rich_help_panel="Machinery"),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config as TOML on stdout (--config reads it back) and the model summary on stderr, then exit.", rich_help_panel="Machinery"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress or log lines (errors and warnings still shown).", rich_help_panel="Machinery"),
        **network: Any,
    ) -> int:
        """Train a speaker embedding extractor (the paper's recipe) from a feature store.

        Example: dasv train --train-labels labels.txt --features feats --valid-trials trials.txt -o runs/paper
        """
        from dasv_cli import progress
        from dasv_cli.cli.app import debug_enabled
        from dasv_cli.train.start import start

        progress.set_quiet(quiet)
        flags = dict(
            train_labels=train_labels, features=features, valid_clients=valid_clients,
            valid_impostors=valid_impostors, valid_trials=valid_trials, valid_features=valid_features, out=out,
            init_from=init_from, recipe=recipe, augmented=augmented, spec_augment=spec_augment,
            online_augment=online_augment, augment_prob=augment_prob, noise_store=noise_store, rir_store=rir_store,
            lr_schedule=lr_schedule, lr_warmup=lr_warmup, min_lr_ratio=min_lr_ratio,
            **network, optimizer=optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
            batch_size=batch_size, grad_accumulation=grad_accumulation, window_seconds=window_seconds, max_minutes=max_minutes,
            random_slicing=random_slicing, norm=norm, max_epochs=max_epochs, max_steps=max_steps,
            early_stopping=early_stopping, lr_patience=lr_patience, max_nonfinite=max_nonfinite,
            print_every=print_every, validate_every=validate_every, save_every=save_every, workers=workers,
            seed=seed, precision=precision, compile=compile_, channels_last=channels_last, device=device,
            gpus=gpus, procs=procs, resume=resume or None,
        )
        return start(flags, config, dry_run=dry_run, debug=debug_enabled())
