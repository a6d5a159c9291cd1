"""Oracle adapters: how to load a model of each framework and run a batch."""
