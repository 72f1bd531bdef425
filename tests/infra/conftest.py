"""Session-scoped synthesized apps: synthesis takes seconds, every check reuses the same result."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.helpers import APP_VARIANTS, SynthesizedApp, make_build_context, synthesize

_CACHE: dict[str, SynthesizedApp] = {}


def _synthesized(name: str, factory: pytest.TempPathFactory) -> SynthesizedApp:
    if name not in _CACHE:
        _CACHE[name] = synthesize(name, factory.mktemp(f"cdk-{name}"))
    return _CACHE[name]


@pytest.fixture(scope="session", params=list(APP_VARIANTS))
def synthesized_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> SynthesizedApp:
    """The app (every stack of infra.app.build_app) in each configuration variant."""
    return _synthesized(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def all_apps(tmp_path_factory: pytest.TempPathFactory) -> list[SynthesizedApp]:
    """Every configuration variant at once, for checks that span them (accepted findings in use)."""
    return [_synthesized(name, tmp_path_factory) for name in APP_VARIANTS]


@pytest.fixture(scope="session")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedApp:
    return _synthesized("default", tmp_path_factory)


@pytest.fixture
def build_context(tmp_path: Path) -> Path:
    return make_build_context(tmp_path / "context")
