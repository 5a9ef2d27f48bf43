"""Conference-call service: TotalVoice conferences from Kafka commands, billed exactly."""
