"""Batch jobs that write the lake: ingest of raw logs and the Spark processing jobs."""
