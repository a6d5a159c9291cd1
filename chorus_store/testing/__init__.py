"""A kit for testing chorus-store and its adapters: tiny real models with random weights
(:mod:`chorus_store.testing.models`) and the shared adapter tests
(:mod:`chorus_store.testing.adapters`, which needs pytest)."""
