"""Airflow DAG files: thin wiring of component functions (no heavy imports at parse time)."""
