"""STRM batch exporter: an Apache Airflow provider exporting Kafka streams to object storage."""

__version__ = "0.1.0"
