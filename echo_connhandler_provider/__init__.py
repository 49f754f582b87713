"""echo_connhandler_provider: the Apache Airflow 3 provider."""
