"""The ``reaflow`` command line.

Like the DAG files, the CLI is wiring: each command builds the settings and
calls one component function, imported inside the command so that ``--help``
stays fast. Problems with input or settings print one line and exit 2.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from reaflow.errors import ReaflowError

app = typer.Typer(
    help="ReaFlow: daily retraining pipeline for reasoning-enhanced sequential recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file (else $REAFLOW_CONFIG).")]
LakeOpt = Annotated[Optional[str], typer.Option("--lake", help="Lake root folder or URI (overrides lake_root).")]
FromOpt = Annotated[Optional[str], typer.Option("--from", help="First logical date, YYYY-MM-DD.")]
ToOpt = Annotated[Optional[str], typer.Option("--to", help="Last logical date, YYYY-MM-DD (inclusive).")]


def _one_line_errors(command):
    """Turn user-fixable problems into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ReaflowError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            typer.echo(f"error: {exc.strerror or exc}: {exc.filename}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _settings(config: Path | None, lake: str | None, **sections: dict[str, Any]):
    """Settings with the command's flags on top; a flag overrides one key, not its whole section."""
    from reaflow.settings import load_settings

    overrides: dict[str, Any] = {name: values for name, values in sections.items() if values}
    if lake:
        overrides["lake_root"] = lake
    return load_settings(config, **overrides)


def _print(summary: Any) -> None:
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
@_one_line_errors
def simulate(
    config: ConfigOpt = None,
    lake: LakeOpt = None,
    ds_from: FromOpt = None,
    ds_to: ToOpt = None,
    days: Annotated[Optional[int], typer.Option(help="Days from the start date (default from settings).")] = None,
    users: Annotated[Optional[int], typer.Option(help="Number of users.")] = None,
    items: Annotated[Optional[int], typer.Option(help="Number of items.")] = None,
    events: Annotated[Optional[int], typer.Option(help="Lines over all days, noise included.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; same seed, same bytes.")] = None,
    start_date: Annotated[Optional[str], typer.Option(help="First day of the simulation, YYYY-MM-DD.")] = None,
) -> None:
    """Write simulated raw events and catalog partitions into the lake."""
    from jobs.ingest.simulator import simulate as run_simulation

    given = {"days": days, "users": users, "items": items, "events": events, "seed": seed, "start_date": start_date}
    settings = _settings(config, lake, simulator={k: v for k, v in given.items() if v is not None})
    _print(run_simulation(settings, ds_from=ds_from, ds_to=ds_to))


@app.command()
@_one_line_errors
def ingest(
    source: Annotated[Optional[str], typer.Option(help="Dataset: simulator, ml-100k, ml-1m, amazon-beauty, amazon-sports, amazon-scientific, amazon-s3rec, amazon-recbole.")] = None,
    path: Annotated[Optional[Path], typer.Option(help="Local copy of the dataset (file or folder); MovieLens is downloaded when absent.")] = None,
    config: ConfigOpt = None,
    lake: LakeOpt = None,
    ds_from: FromOpt = None,
    ds_to: ToOpt = None,
) -> None:
    """Replay a log source into the lake as daily raw partitions."""
    from jobs.ingest import ingest as run_ingest

    given = {"name": source, "path": path}
    settings = _settings(config, lake, source={k: v for k, v in given.items() if v is not None})
    _print(run_ingest(settings, ds_from=ds_from, ds_to=ds_to))


@app.command()
@_one_line_errors
def run(config: ConfigOpt = None, lake: LakeOpt = None, ds_from: FromOpt = None, ds_to: ToOpt = None) -> None:
    """The main job: the daily_retraining DAG, once per logical date, in process (dag.test)."""
    import datetime as dt
    import os

    from reaflow.airflow_local import run_dag_days
    from reaflow.errors import InputError
    from reaflow.lake import ds_str

    settings = _settings(config, lake)
    if ds_from is None and settings.source.name == "simulator":
        first = settings.simulator.start_date
        days = [(first + dt.timedelta(days=k)).isoformat() for k in range(settings.simulator.days)]
    elif ds_from is None:
        raise InputError(f"source {settings.source.name!r}: pass --from (and --to) to say which days to run")
    else:
        first, last = dt.date.fromisoformat(ds_str(ds_from)), dt.date.fromisoformat(ds_str(ds_to or ds_from))
        days = [(first + dt.timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
    env = {"REAFLOW_CONFIG": str(config.resolve())} if config else {}
    if lake:
        env["REAFLOW_LAKE_ROOT"] = lake
    env["REAFLOW_STATE_DIR"] = str(settings.state_dir.resolve())
    for name, value in os.environ.items():
        if name.startswith("REAFLOW_"):
            env.setdefault(name, value)
    _print(run_dag_days(settings, "daily_retraining", days, env))


@app.command()
@_one_line_errors
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="sasrec, rearec-erl, rearec-prl or plr.")],
    data: Annotated[Optional[str], typer.Option("--data", help="Benchmark (amazon-beauty, amazon-sports, ml-100k) or a sequence file; else the lake's curated splits of --ds.")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder holding the benchmark datasets.")] = None,
    ds: Annotated[Optional[str], typer.Option("--ds", help="Logical date of the lake's splits, YYYY-MM-DD.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Checkpoint folder; rerunning on it resumes.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Maximum epochs (training.max_epochs).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (training.seed).")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Log to MLflow.")] = True,
    config: ConfigOpt = None,
    lake: LakeOpt = None,
) -> None:
    """Train one model with early stopping on validation NDCG@10; prints the run summary."""
    from models.candidates import run_dir as default_run_dir
    from models.data import load_benchmark, load_lake_splits
    from models.train import train as train_model
    from reaflow.lake import ds_str
    from reaflow.settings import MODEL_NAMES

    training = {k: v for k, v in {"max_epochs": epochs, "seed": seed}.items() if v is not None}
    settings = _settings(config, lake, training=training)
    if model not in MODEL_NAMES:
        raise ReaflowError(f"unknown model {model!r}; expected one of {', '.join(MODEL_NAMES)}")
    if data:
        dataset = load_benchmark(data, data_root, settings.training.protocol)
        skipped = dataset.meta.get("skipped_lines", 0)
        if skipped:
            typer.echo(f"warning: skipped {skipped} line{'s' if skipped > 1 else ''} of {data} "
                       f"({dataset.meta['skipped_because']})", err=True)
        folder = run_dir or (settings.state_dir / "training" / "benchmarks" / f"{dataset.name}-{settings.training.protocol}"
                             / f"{model}-seed{settings.training.seed}")
    elif ds:
        dataset = load_lake_splits(settings, ds_str(ds), settings.training.protocol)
        folder = run_dir or default_run_dir(settings, ds, model)
    else:
        raise ReaflowError("give --data (a benchmark or a sequence file) or --ds (the lake's splits of that day)")
    result = train_model(settings, model, dataset, folder, track=track)
    _print(result.summary())


@app.command()
@_one_line_errors
def enrich(
    ds: Annotated[str, typer.Option("--ds", help="Logical date of the lake's curated catalog, YYYY-MM-DD.")],
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="Most new or changed items this run (enrich.max_items; 0: all).")] = None,
    max_seconds: Annotated[Optional[float], typer.Option("--max-seconds", help="Time budget (enrich.max_seconds; 0: none).")] = None,
    judge: Annotated[Optional[bool], typer.Option("--judge/--no-judge", help="Let the judge agent check each record (enrich.judge).")] = None,
    embed: Annotated[bool, typer.Option("--embed/--no-embed", help="Then encode records and metadata with the sentence model.")] = True,
    config: ConfigOpt = None,
    lake: LakeOpt = None,
) -> None:
    """LLM knowledge for the catalog's new and changed items (cached; most popular first); prints the run summary."""
    from llm_enrich.embeddings import embed_items
    from llm_enrich.enrich import enrich_items

    given = {"max_items": max_items, "max_seconds": max_seconds, "judge": judge}
    settings = _settings(config, lake, enrich={k: v for k, v in given.items() if v is not None})
    summary = {"enrich": enrich_items(settings, ds, progress=True)}
    if embed:
        summary["embed"] = embed_items(settings, ds)
    _print(summary)


@app.command()
@_one_line_errors
def generate(
    ds: Annotated[str, typer.Option("--ds", help="Logical date of the lake's sequences and splits, YYYY-MM-DD.")],
    items: Annotated[Optional[int], typer.Option("--items", help="Items generated per user (beyond_log.items).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps (beyond_log.steps).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="0: most likely item per slot; above 0: sampled (beyond_log.temperature).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs of the denoiser (beyond_log.max_epochs).")] = None,
    config: ConfigOpt = None,
    lake: LakeOpt = None,
) -> None:
    """Beyond-log behaviours: train the masked-diffusion denoiser on the day's splits and generate items per user."""
    from llm_enrich.beyond_log import generate_beyond_log

    given = {"items": items, "steps": steps, "temperature": temperature, "max_epochs": epochs}
    settings = _settings(config, lake, beyond_log={k: v for k, v in given.items() if v is not None})
    _print(generate_beyond_log(settings, ds, progress=True))


@app.command("settings")
@_one_line_errors
def show_settings(config: ConfigOpt = None, lake: LakeOpt = None) -> None:
    """Print the effective settings (defaults, file, environment) as JSON."""
    settings = _settings(config, lake)
    data = settings.model_dump(mode="json")
    if data["llm"].get("api_key"):
        data["llm"]["api_key"] = "***"
    _print(data)


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(main())
