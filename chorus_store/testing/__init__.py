"""A testing kit for chorus-store and its adapters: fixtures, fault injection, tiny models."""
