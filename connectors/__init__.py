"""Connectors push posts from where customers write into the raw-posts Kafka topic (Post schema v1)."""
