"""Test configuration: the device to test on, the ``gpu`` marker, Hypothesis profiles.

Device (needle's habit: the backend chosen once, printed, and every test run
on it)::

    python -m pytest                     # cpu, or MINILORA_DEVICE if set
    python -m pytest --device cuda       # the same suite on CuPy arrays

Tests take the ``device`` fixture and build their tensors on it. Asking for
"cuda" without CuPy or a GPU skips those tests with the reason; tests marked
``gpu`` are skipped the same way.

Hypothesis profiles (choose with HYPOTHESIS_PROFILE, default "ci"):

* ``ci``: 50 examples per property test, derandomized (the same examples on
  every run), no deadline. The whole engine suite then runs in about 13 s on
  2 cores (most of it elementwise gradchecks).
* ``dev``: 300 examples per property test, random, for hunting bugs locally.

BLAS threads: one per test process unless the environment names a number. The README's
command runs one process per core (``-n auto``, pytest-xdist), each test file in one
process (``--dist loadfile``: a file's fixtures are built once); two BLAS threads in each
would only fight over the cores, and one thread sums a matrix product in the same order on
every machine, as the committed records and notebooks were computed.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before NumPy is imported (next, by minilora)

from minilora import backend  # noqa: E402 (after the BLAS threads are set)

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=os.environ.get("MINILORA_DEVICE", "cpu").strip().lower() or "cpu",
        help="device for the tests' tensors: cpu or cuda (default: $MINILORA_DEVICE, else cpu)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs CuPy and a CUDA device (skipped cleanly without them)"
    )


def _cuda_missing() -> str | None:
    """Why "cuda" cannot be used here, or None when it can."""
    try:
        backend.array_module("cuda")
    except RuntimeError as err:
        return str(err)
    return None


def pytest_report_header(config):
    return f"minilora test device: {config.getoption('--device')}"


def pytest_collection_modifyitems(config, items):
    missing = _cuda_missing()
    if missing is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {missing}")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device name ("cpu" or "cuda") every tensor of a test should live on."""
    name = backend.check_device(request.config.getoption("--device"))
    if name == "cuda":
        missing = _cuda_missing()
        if missing is not None:
            pytest.skip(f"--device cuda: {missing}")
    return name


@pytest.fixture
def records_without(tmp_path, monkeypatch):
    """``records_without(drop)``: the committed run records as a folder of links, without those
    whose run (a dict) ``drop`` names, so that a table can be read as if they were missing."""
    import json

    from minilora.paper import experiments

    def keep_all_but(drop) -> None:
        kept = tmp_path / "records"
        kept.mkdir()
        for path in experiments.RECORDS.glob("*.json"):
            if not drop(json.loads(path.read_text())["run"]):
                (kept / path.name).symlink_to(path)
        monkeypatch.setattr(experiments, "RECORDS", kept)

    return keep_all_but
