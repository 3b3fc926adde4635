"""The daily retraining DAG: one run per day of logs (``ds``).

Each task is a thin call to one component function, which reads its inputs
from the lake, writes its outputs atomically and returns a small summary for
XCom. Heavy libraries are imported inside the tasks, never at parse time.
Settings come from the environment of the worker (``REAFLOW_*``,
``REAFLOW_CONFIG``). One run at a time: the id vocabularies are shared state.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task

LAKE_CURATED_EVENTS = Asset("reaflow://lake/curated/events")
LAKE_SEQUENCES = Asset("reaflow://lake/curated/sequences")


def _settings():
    from reaflow.settings import load_settings

    return load_settings()


@dag(
    dag_id="daily_retraining",
    schedule="@daily",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=5)},
    tags=["reaflow"],
    doc_md=__doc__,
)
def daily_retraining():
    @task
    def ingest(ds: str | None = None) -> dict:
        """Raw events and catalog of the day from the configured log source."""
        from jobs.ingest import ingest as run

        summary = run(_settings(), ds_from=ds, ds_to=ds)
        return {k: v for k, v in summary.items() if k != "days"}

    @task
    def process_catalog(ds: str | None = None) -> dict:
        """The item catalog as of the day, with bad catalog rows quarantined."""
        from jobs.catalog import process_catalog as run

        return run(_settings(), ds)

    @task(outlets=[LAKE_CURATED_EVENTS])
    def process_events(ds: str | None = None) -> dict:
        """Raw events to curated events, with quarantine and row accounting."""
        from jobs.process_events import process_events as run

        return run(_settings(), ds)

    @task(outlets=[LAKE_SEQUENCES])
    def build_sequences(ds: str | None = None) -> dict:
        """User sequences, statistics and splits as of the day."""
        from jobs.sequences import build_sequences as run

        return run(_settings(), ds)

    ingest() >> process_catalog() >> process_events() >> build_sequences()


daily_retraining()
