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

from reaflow.settings import MODEL_NAMES

LAKE_CURATED_EVENTS = Asset("reaflow://lake/curated/events")
LAKE_SEQUENCES = Asset("reaflow://lake/curated/sequences")
LAKE_ITEM_KNOWLEDGE = Asset("reaflow://lake/enrich/item_knowledge")
LAKE_ITEM_EMBEDDINGS = Asset("reaflow://lake/enrich/item_embeddings")
LAKE_BEYOND_LOG = Asset("reaflow://lake/enrich/beyond_log")


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

    @task(outlets=[LAKE_ITEM_KNOWLEDGE])
    def enrich_items(ds: str | None = None) -> dict:
        """LLM knowledge for new and changed catalog items, most popular first, under the run's budget (cached)."""
        from llm_enrich.enrich import enrich_items as run

        return run(_settings(), ds)

    @task(outlets=[LAKE_ITEM_EMBEDDINGS])
    def embed_items(ds: str | None = None) -> dict:
        """Sentence embeddings of the knowledge records and of the raw metadata (cached)."""
        from llm_enrich.embeddings import embed_items as run

        return run(_settings(), ds)

    @task(outlets=[LAKE_BEYOND_LOG])
    def generate_beyond_log(ds: str | None = None) -> dict:
        """Train the masked-diffusion denoiser and write each user's generated beyond-log items (MLflow-tracked)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from llm_enrich.beyond_log import generate_beyond_log as run

        settings = _settings()
        if not settings.beyond_log.enabled:
            raise AirflowSkipException("beyond_log.enabled is false")
        return run(settings, ds)

    def train_task(model_name: str):
        @task(task_id=f"train_{model_name.replace('-', '_')}")
        def train(ds: str | None = None) -> dict:
            """Train one candidate on the day's splits; tracked in MLflow, resumes from its checkpoint on retry."""
            from airflow.sdk.exceptions import AirflowSkipException

            from models.candidates import train_candidate

            settings = _settings()
            if model_name not in settings.training.models:
                raise AirflowSkipException(f"{model_name} is not in training.models")
            return train_candidate(settings, ds, model_name)

        return train()

    sequences = ingest() >> process_catalog() >> process_events() >> build_sequences()
    knowledge = sequences >> enrich_items() >> embed_items()  # after the sequences: popularity orders the budget
    beyond_log = knowledge >> generate_beyond_log()  # reads the item vectors when training.item_representation asks
    beyond_log >> [train_task(name) for name in MODEL_NAMES]


daily_retraining()
