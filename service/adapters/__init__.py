"""Implementations of the ports for Postgres, Kafka and TotalVoice."""
