"""A testing kit for chorus-store and its adapters: a loopback S3 server, fault injection,
tiny real models with random weights and the shared adapter tests (which need pytest)."""
