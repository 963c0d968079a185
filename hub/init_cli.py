"""`edgeloop hub init`: set up a hub's project, from a class list or from a model brought from outside."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ._options import db_option


@click.command("init")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Hub data folder.")
@click.option("--task", type=click.Choice(["classify", "detect"]), default=None,
              help="What a label is: one class per frame, or boxes (default: the model's task).")
@click.option("--classes", default=None, metavar="A,B,C",
              help="The class names, comma-separated, in index order (default: the model's).")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The seed model: an edgeloop artifact, an .onnx with --manifest, or a bare .onnx whose "
                   "metadata names its task and classes (an Ultralytics export). Registered, signed by the "
                   "hub, as the fleet's first desired model.")
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Manifest JSON for --model (overrides its metadata).")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The model's checkpoint folder (e.g. the .pt Ultralytics trained): handed to its trainer "
                   "as --parent DIR/checkpoint when a child is trained from it.")
@click.option("--trainer", default=None, metavar="builtin:...|command:...",
              help="The project's trainer (see the README's trainer contract); default the built-in one "
                   "for the task.")
@click.option("--golden", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Golden set (.npz) kept as DATA/golden.npz; the seed model is evaluated on it.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Private key models are signed with (default DATA/keys/hub.key, created if missing).")
@db_option
def init(data_dir, task, classes, model_path, manifest_path, checkpoint, trainer, golden, key_path, db) -> None:
    """Fix the project's task and classes (and trainer), optionally from a model trained elsewhere.

    Labels are then checked against these classes, the labeling page offers them, and every trained
    model must have exactly them. A model given with --model keeps its architecture: children are
    trained from it by its own trainer (--trainer command:...) from its --checkpoint.

    \b
    Examples:
      edgeloop hub init --data /var/lib/edgeloop/hub --task detect --classes car,van,bike
      edgeloop hub init --data /var/lib/edgeloop/hub --model yolov8n.onnx --golden golden.npz \\
          --checkpoint runs/detect/train/weights --trainer "command:python train_yolo.py"
    """
    from edgeloop.shared.errors import EdgeloopError
    from edgeloop.shared.onnx_metadata import load_model_file

    from .keys import default_key_path, load_or_create
    from .project import Project, from_manifest, save_project
    from .store import HubStore
    from .training.contract import trainer_argv

    if trainer:
        try:
            trainer_argv(trainer)
        except EdgeloopError as exc:
            raise click.UsageError(f"--trainer: {exc}") from exc
    given = tuple(c.strip() for c in classes.split(",")) if classes else None
    if given is not None and not all(given):
        raise click.UsageError("--classes: an empty class name (two commas, or a trailing one)")
    model = None
    if model_path is not None:
        onnx, manifest, notes = load_model_file(model_path.read_bytes(),
                                                manifest_path.read_bytes() if manifest_path else None)
        model = (onnx, manifest)
        for note in notes:
            click.echo(f"{model_path.name}: {note}")
        proj = from_manifest(manifest.task, manifest.labels)
        if (task and task != proj.task) or (given and given != proj.classes):
            raise click.UsageError(f"--task/--classes disagree with the model, which is {proj.task} of "
                                   f"{proj.describe()}")
    else:
        if not task or not given:
            raise click.UsageError("give --task and --classes, or --model")
        proj = Project(task, given)
    store = HubStore(data_dir, db)
    try:
        save_project(store, proj, trainer)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"project: {proj.task} of {len(proj.classes)} classes ({proj.describe()}); "
               f"trainer {trainer or 'builtin:' + proj.task}")
    if golden is not None:
        shutil.copyfile(golden, data_dir / "golden.npz")
    if model is not None:
        version = register_seed(store, load_or_create(key_path or default_key_path(data_dir)), *model,
                                data_dir / "golden.npz", checkpoint, trainer, source=model_path.name)
        click.echo(f"registered {version} and made it the fleet's desired model")


def register_seed(store, key, onnx: bytes, manifest, golden_path: Path, checkpoint: Path | None, trainer: str | None,
                  source: str) -> str:
    """Evaluate a model brought from outside on the golden set (when there is one), sign and register
    it with its checkpoint and lineage, and make it the desired model -> its version."""
    import dataclasses
    from datetime import datetime, timezone

    from edgeloop.shared.runtime import ModelRuntime

    from .training.golden import load_golden
    from .training.judge import evaluate_on, register
    from .training.rounds import next_version
    from .training.workspace import pack_checkpoint

    version = next_version(store)
    manifest = dataclasses.replace(manifest, version=version, parent=None,
                                   created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    metrics: dict = {"lineage": {"trainer": trainer or "external", "registered_from": source, "parent": None}}
    if golden_path.exists():
        metrics |= evaluate_on(ModelRuntime.load(onnx, manifest), load_golden(golden_path))
    metrics["gate"] = {"passed": True, "reasons": ["registered from outside: the first model, nothing to compare"],
                       "regressed": [], "parent": None}
    register(store, key, manifest, onnx, pack_checkpoint(checkpoint) if checkpoint else b"", metrics,
             reference=None, labels_total=0)
    store.set_desired(version)
    return version
