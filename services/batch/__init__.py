"""The offline batch job: the tuned teacher labels texts ahead of time into a Redis generation."""
