"""``python -m chorus_store``: the ``chorus-store`` command line."""

from chorus_store.cli import app

app(prog_name="chorus-store")
