"""Project tooling: the local Airflow deployment that runs the example DAGs (not shipped)."""
