"""Where transport meets the use cases: HTTP, the Kafka consumer, the schedule loops, the CLI."""
