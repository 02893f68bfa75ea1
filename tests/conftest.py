"""Shared test setup: simulated 8-device CPU mesh, the data mirror, and marker gating."""

import os
import pathlib

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("VALUEPROBE_DATA_DIR", str(SHARED_DATA))


def pytest_collection_modifyitems(config, items):
    gates = {"slow": ("VALUEPROBE_SLOW", "slow check: set VALUEPROBE_SLOW=1 to run"),
             "gpu": ("VALUEPROBE_GPU", "needs a GPU: set VALUEPROBE_GPU=1 on a jax[cuda] machine")}
    for item in items:
        for marker, (env, reason) in gates.items():
            if marker in item.keywords and not os.environ.get(env):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("the data mirror ../shared/data is not present")
    return SHARED_DATA
