"""`dasv export`: a checkpoint's embedding extractor -> model.onnx (needs the 'export' extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from dasv_cli.cli.options import required_argument, required_output

EPILOG = """\
[bold]Examples[/bold]

  dasv export best.pt -o model.onnx

  dasv export best.pt -o model-wave.onnx --waveform --json

The graph takes raw log-mel [batch, frames, n_mels] (or, with --waveform, waveforms [batch, samples] at the recipe's rate) and gives embeddings [batch, E]; it applies the checkpoint's normalisation itself. Needs onnx and onnxruntime: pip install "dasv[export]".
"""


def register(app: typer.Typer) -> None:
    app.command("export", epilog=EPILOG)(export)


def export(
    checkpoint: Path = required_argument("CKPT", "dasv checkpoint (.pt) or original .chkpt."),
    output: Path = required_output("FILE.onnx", "Where to write the ONNX model."),
    waveform: bool = typer.Option(False, "--waveform", help="Waveform in: the log-mel recipe inside the graph."),
    opset: int = typer.Option(17, "--opset", min=13, max=21, help="ONNX opset version."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Export the embedding extractor to ONNX, then check the file with onnxruntime.

    The model's metadata holds the feature recipe, the normalisation, the sizes, the dasv version and
    the source checkpoint's digest, so the file is all a runtime needs.
    """
    import json

    from dasv_cli.deploy.export import export_onnx
    from dasv_cli.errors import DasvError
    from dasv_cli.progress import log, stdout_write

    if output.exists() and not force:
        raise DasvError(f"{output}: already exists; pass --force to overwrite it")
    if output.exists() and checkpoint.exists() and output.resolve() == checkpoint.resolve():
        raise DasvError(f"{output}: is the input checkpoint; choose another output path")
    report = export_onnx(checkpoint, output, waveform=waveform, opset=opset)
    check = report.check
    log(f"exported {checkpoint} -> {output}: {report.input} in, {report.embedding_size}-d embedding out, "
        f"normalisation '{report.norm}' inside, {report.parameters} parameters, {report.bytes / 1e6:.1f} MB, "
        f"opset {report.opset}, {report.seconds:.1f} s", force=True)
    log(f"checked with onnxruntime on lengths {check['lengths']}: max |diff| {check['max_abs_diff']:.2e}, "
        f"min cosine {check['min_cosine']:.8f}", force=True)
    if json_out:
        stdout_write(json.dumps(report.to_dict(), indent=2) + "\n")
