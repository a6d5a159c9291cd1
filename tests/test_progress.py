"""A long run that talks: one progress style (a bar, or a timed log line), --log-file,
summaries, and interrupts that say what was kept and the command that resumes."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from chorus_store import build, load_recipe, plan_store, reduce, status
from chorus_store.cli import app
from chorus_store.demo import DemoInputs
from chorus_store.errors import UsageError, WriteError
from chorus_store.progress_log import (
    INTERVAL_ENV,
    Meter,
    configure_logging,
    eta_s,
    interval_s,
    progress_line,
    rate,
)
from chorus_store.store.core import ChorusStore

from .helpers import gc_window_model
from .test_errors import RECIPE, ROOT, TRACKS, gc_store

runner = CliRunner()
CLI = [sys.executable, "-m", "chorus_store.cli"]
#: a periodic progress line: rows, percent, rate, elapsed, ETA and the oracle's share
LINE = re.compile(
    r"build: (?:finished )?[\d,]+/[\d,]+ rows \(\d+\.\d %\), [\d.,]+ rows/s, "
    r"elapsed \d+:\d\d:\d\d, ETA (?:\d+:\d\d:\d\d|unknown), oracle \d+ % of wall time"
)


# --------------------------------------------------------------------------------------
# the arithmetic and the line
# --------------------------------------------------------------------------------------


def test_the_line_says_rows_percent_rate_elapsed_eta_and_the_oracle_share() -> None:
    line = progress_line("build", 12_345, 100_000, 270.7, busy=("oracle", 235.5))
    assert line == (
        "build: 12,345/100,000 rows (12.3 %), 45.6 rows/s, elapsed 0:04:31, "
        "ETA 0:32:02, oracle 87 % of wall time"
    )
    assert LINE.fullmatch(line)
    # nothing done yet: no rate to extrapolate; nothing to do: done at once
    assert progress_line("reduce", 0, 84, 5.0, unit="blocks") == (
        "reduce: 0/84 blocks (0.0 %), 0.0 blocks/s, elapsed 0:00:05, ETA unknown"
    )
    assert progress_line("plan", 0, 0, 0.0, unit="windows").startswith(
        "plan: 0/0 windows (100.0 %), 0.0 windows/s"
    )
    # slow stages keep three significant digits; a long one counts days
    assert "0.0123 blocks/s" in progress_line("reduce", 1, 10, 81.3, unit="blocks")
    assert "ETA 1 day, 0:00:00" in progress_line("build", 1, 2, 86_400.0)


def test_rate_and_eta_arithmetic() -> None:
    assert rate(0, 0.0) == 0.0 and rate(10, 0.0) == 0.0
    assert rate(50, 10.0) == 5.0
    assert eta_s(50, 100, 10.0) == 10.0  # 50 left at 5 a second
    assert eta_s(0, 100, 10.0) is None
    assert eta_s(100, 100, 10.0) == 0.0 and eta_s(120, 100, 1.0) == 0.0


@given(
    done=st.integers(1, 10**9),
    left=st.integers(0, 10**9),
    elapsed=st.floats(1e-3, 1e7, allow_nan=False),
)
def test_eta_is_the_rest_at_the_average_rate(done: int, left: int, elapsed: float) -> None:
    total = done + left
    eta = eta_s(done, total, elapsed)
    assert eta is not None and eta >= 0
    # finishing the rest at the run's rate takes eta: done + rate x eta = total
    assert done + rate(done, elapsed) * eta == pytest.approx(total, rel=1e-9)
    # more done in the same time: never a later finish
    assert (eta_s(min(done + 1, total), total, elapsed) or 0.0) <= eta


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_s() == 60.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert interval_s() == 2.5
    for bad in ("soon", "0", "-3", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(UsageError, match=f"{INTERVAL_ENV}=.*unset it"):
            interval_s()
    res = runner.invoke(app, ["status", "nowhere.zarr"])
    assert res.exit_code == 2 and "UsageError" in res.stderr and INTERVAL_ENV in res.stderr


# --------------------------------------------------------------------------------------
# the meter
# --------------------------------------------------------------------------------------


@pytest.fixture()
def meter_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.LogCaptureFixture]:
    """The meters' log records (``.records``), no bar drawn (as in a batch job, even
    under ``pytest -s``)."""
    monkeypatch.setattr("chorus_store.progress_log.interactive", lambda: False)
    caplog.set_level(logging.INFO, logger="chorus_store.progress_log")
    yield caplog


def _lines(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "chorus_store.progress_log"]


def test_the_meter_counts_from_threads_and_logs_every_interval(
    meter_log: pytest.LogCaptureFixture,
) -> None:
    with Meter("build", 4_000, busy="oracle", interval=0.05) as meter:

        def work() -> None:
            for _ in range(1_000):
                meter.advance()
                meter.add_busy(0.0001)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.3)
    assert meter.done == 4_000 and meter.busy_s == pytest.approx(0.4)
    lines = _lines(meter_log.records)
    assert lines[0] == "build: 4,000 rows to do"
    periodic = lines[1:-1]
    assert len(periodic) >= 3 and all(LINE.fullmatch(x) for x in periodic)
    assert lines[-1].startswith("build: finished 4,000/4,000 rows (100.0 %)")
    # no bar: the periodic lines are for the console, the start line never is
    console = [getattr(r, "console", None) for r in meter_log.records]
    assert console[0] is False and all(console[1:])


def test_a_quick_stage_stays_off_the_console_and_an_interrupt_is_logged(
    meter_log: pytest.LogCaptureFixture,
) -> None:
    with Meter("export", 9, unit="arrays", interval=60) as meter:
        for _ in meter.iterate(range(9)):
            pass
    assert _lines(meter_log.records)[-1].startswith("export: finished 9/9 arrays")
    assert not any(getattr(r, "console", False) for r in meter_log.records)  # quick: quiet
    meter_log.clear()
    with pytest.raises(KeyboardInterrupt), Meter("reduce", 5, unit="blocks") as meter:
        meter.advance(2)
        raise KeyboardInterrupt
    assert _lines(meter_log.records)[-1].startswith(
        "reduce: stopped (interrupted) at 2/5 blocks (40.0 %)"
    )


def test_the_console_shows_warnings_and_meter_lines_the_log_file_all_info(
    tmp_path: Path,
) -> None:
    logfile = tmp_path / "run.log"
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as in a fresh process: the console handler is installed
    try:
        undo = configure_logging(log_file=logfile)
        console = next(h for h in root.handlers if not isinstance(h, logging.FileHandler))
        log = logging.getLogger("chorus_store.test")

        def shown(level: int, **extra: bool) -> bool:
            record = log.makeRecord(log.name, level, __file__, 1, "m", (), None, extra=extra)
            return bool(console.filter(record))

        assert shown(logging.WARNING) and not shown(logging.INFO)
        assert shown(logging.INFO, console=True)
        assert not shown(logging.ERROR, printed=True)  # on the console already
        log.info("an info line")
        log.error("an error line", extra={"printed": True})
        undo()
    finally:
        root.handlers[:] = saved
    text = logfile.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO chorus_store.test: an info", text)
    assert "ERROR chorus_store.test: an error line" in text
    assert not [h for h in root.handlers if h not in saved]  # undone
    with pytest.raises(WriteError, match="cannot open the log file .*--log-file"):
        configure_logging(log_file=tmp_path / "no" / "such" / "dir" / "run.log")


# --------------------------------------------------------------------------------------
# the stages
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory, demo_inputs: DemoInputs) -> Path:
    """A planned, unbuilt store of test_errors' two-track recipe with its slow model."""
    root = tmp_path_factory.mktemp("progress")
    return gc_store(root, demo_inputs, "slow", model="slow_model", identity="slow")


@pytest.fixture()
def fresh(planned: Path, tmp_path: Path) -> Path:
    store = tmp_path / "s.zarr"
    shutil.copytree(planned, store)
    return store


def test_the_reduce_drives_the_same_meter_not_a_dask_progress_bar(
    fresh: Path, meter_log: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    build(fresh, progress=False)
    meter_log.clear()
    report = reduce(fresh, progress=True)
    blocks = sum(report.blocks_computed.values())
    assert blocks == report.blocks_total > 0
    lines = _lines(meter_log.records)
    assert lines[0] == f"reduce: {blocks} blocks to do"
    assert lines[-1].startswith(f"reduce: finished {blocks}/{blocks} blocks (100.0 %)")
    captured = capsys.readouterr()
    assert "[#" not in captured.out + captured.err  # dask.diagnostics.ProgressBar's bar
    assert "Completed" not in captured.out + captured.err


def test_the_reduce_on_a_cluster_counts_its_futures(
    fresh: Path, meter_log: pytest.LogCaptureFixture
) -> None:
    from distributed import Client

    build(fresh, progress=False)
    cluster = Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None)  # type: ignore[no-untyped-call]
    with cluster as c:
        report = reduce(fresh, scheduler=c, progress=True)
    blocks = sum(report.blocks_computed.values())
    assert blocks == report.blocks_total and report.values_reduced > 0
    assert _lines(meter_log.records)[-1].startswith(f"reduce: finished {blocks}/{blocks} blocks")
    again = reduce(fresh, progress=False)  # what the cluster wrote is current
    assert sum(again.blocks_computed.values()) == 0


def test_log_file_gets_info_lines_without_v(fresh: Path, tmp_path: Path) -> None:
    build(fresh, progress=False)
    logfile = tmp_path / "reduce.log"
    res = runner.invoke(app, ["--log-file", str(logfile), "reduce", str(fresh)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("reduced ") and "values/s; wrote 3 grid block(s)" in res.stdout
    text = logfile.read_text()
    assert f"INFO chorus_store.cli: chorus-store {_version()}" in text
    assert re.search(r"INFO chorus_store.reduce: reduce .*: 3 of 3 block\(s\) stale", text)
    assert "INFO chorus_store.progress_log: reduce: finished 3/3 blocks" in text
    assert f"INFO chorus_store.cli: {res.stdout.strip()}" in text  # the summary, once
    runner.invoke(app, ["--log-file", str(logfile), "reduce", str(fresh)])
    assert text in logfile.read_text()  # appended
    res = runner.invoke(app, ["--log-file", str(tmp_path / "no/dir/x.log"), "status", "x"])
    assert res.exit_code == 2 and "WriteError" in res.stderr


def _version() -> str:
    from chorus_store import __version__

    return __version__


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


def test_a_build_in_a_batch_job_logs_periodic_lines_and_a_summary(
    fresh: Path, tmp_path: Path
) -> None:
    logfile = tmp_path / "build.log"
    res = subprocess.run(
        [*CLI, "--log-file", str(logfile), "build", str(fresh)],
        cwd=ROOT, env=_env(SLOW_MODEL_S="0.2", **{INTERVAL_ENV: "0.25"}),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # stdout and stderr are pipes: no bar, the meter's lines on stderr instead
    periodic = [x for x in res.stderr.splitlines() if LINE.search(x)]
    assert len(periodic) >= 3, res.stderr
    assert "\x1b[" not in res.stderr  # no terminal control codes
    assert "finished 110/110 rows (100.0 %)" in periodic[-1]
    summary = res.stdout.strip()
    assert re.fullmatch(
        r"built 110 rows \(baselines 80, variants 30\) in 7 tasks, \d+ oracle calls, "
        r"[\d.]+ s, [\d.,]+ rows/s, oracle \d+ % of wall time; wrote the records of 7 "
        r"task\(s\) \(a row shard's tracks each\) to " + re.escape(str(fresh)),
        summary,
    ), summary
    text = logfile.read_text()
    assert len(re.findall(r"INFO chorus_store.progress_log: build: [\d,]+/110 rows", text)) >= 3
    assert "build: 110 rows to do" in text and f"INFO chorus_store.cli: {summary}" in text


def _first_shard_done(store: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if (ChorusStore.open(store).read("baselines/done_rows") > 0).any():
            return
        time.sleep(0.05)
    pytest.fail("the build finished no shard within a minute")


@pytest.mark.slow
def test_sigterm_says_what_was_kept_and_the_printed_command_resumes(
    fresh: Path, tmp_path: Path
) -> None:
    logfile = tmp_path / "build.log"
    proc = subprocess.Popen(
        [*CLI, "--log-file", str(logfile), "build", str(fresh), "--part", "all"],
        cwd=ROOT, env=_env(SLOW_MODEL_S="0.3", **{INTERVAL_ENV: "0.2"}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _first_shard_done(fresh, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(
        r"interrupted \(SIGTERM\): (\d+) of (\d+) row shards are built and kept; nothing "
        r"written is lost; resume with: (.*)",
        last,
    )
    assert found, err
    kept, total = int(found[1]), int(found[2])
    assert 1 <= kept < total == 7
    resume = shlex.split(found[3])
    assert resume == ["chorus-store", "--log-file", str(logfile), "build", str(fresh)] + [
        "--part",
        "all",
    ]
    assert "stopped (interrupted) at" in err  # the meter's last line, then the one above
    assert f"ERROR chorus_store.cli: {last}" in logfile.read_text()
    rerun = subprocess.run(
        [*CLI, *resume[1:]], cwd=ROOT, env=_env(SLOW_MODEL_S="0"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert all(b["shards_done"] == b["shards"] for b in status(fresh).build.values())
    assert f"in {total - kept} tasks" in rerun.stdout  # only what was not kept


# --------------------------------------------------------------------------------------
# in-process: the resume command from the words click parsed
# --------------------------------------------------------------------------------------

CALLS: list[int] = []


def terminating_model(onehot: np.ndarray) -> dict[str, np.ndarray]:
    """``gc_window_model``, but its second call sends SIGTERM to its own process."""
    CALLS.append(len(onehot))
    if len(CALLS) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return gc_window_model(onehot)


def test_an_interrupt_in_process_resumes_with_the_parsed_command(
    tmp_path: Path, demo_inputs: DemoInputs
) -> None:
    directory = tmp_path / "recipe"
    directory.mkdir()
    (directory / "recipe.toml").write_text(
        RECIPE.format(
            callable="tests.test_progress:terminating_model", identity="term", n_random=40
        )
    )
    (directory / "tracks.tsv").write_text(TRACKS)
    store = tmp_path / "t.zarr"
    recipe = load_recipe(directory / "recipe.toml")
    plan_store(store, recipe, fasta=demo_inputs.fasta, ccre=demo_inputs.ccre, gtf=demo_inputs.gtf)
    logfile = tmp_path / "t.log"
    CALLS.clear()
    before = signal.getsignal(signal.SIGTERM)
    res = runner.invoke(
        app,
        ["--log-file", str(logfile), "build", str(store), "--no-progress", "--part", "baselines"],
    )
    assert res.exit_code == 143, res.output
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted (SIGTERM): ") and "row shards are built and kept" in line
    resume = shlex.split(line.split("resume with: ")[1])
    # click's parameters in declaration order, the root's first: the same command
    assert resume == [
        "chorus-store", "--log-file", str(logfile), "build", str(store), "--part", "baselines",
        "--no-progress",
    ]  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is before  # the handler was put back
    assert status(store).claims == []
