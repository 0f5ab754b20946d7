"""The page tests' browser fixture without a browser: under ``CI=true`` (as .ci/run sets)
a missing Chromium fails the test, saying what to install; elsewhere it is skipped with the
reason printed, so `make test` on a machine without Chromium still passes and says why."""

from __future__ import annotations

import pytest

from tests.dashboard import browser


@pytest.fixture
def no_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", str(tmp_path))


def test_missing_chromium_fails_under_ci(no_chromium: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and Chromium not found.*"
                       r"apt-get install -y chromium"):
        browser.require_chromium()


def test_missing_chromium_skips_elsewhere_with_the_reason_printed(
        no_chromium: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        browser.require_chromium()
    assert "SKIP: Chromium not found" in capsys.readouterr().err

