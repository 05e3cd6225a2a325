"""The rule for missing tools: skip on a developer's machine, fail under CI=true."""

import pytest

import annotate_helpers


def test_a_missing_tool_skips_locally_and_fails_in_ci(monkeypatch):
  monkeypatch.setattr(annotate_helpers, "IN_CI", False)
  with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not available: install it"):
    annotate_helpers.missing("PostgreSQL", "install it")
  monkeypatch.setattr(annotate_helpers, "IN_CI", True)
  with pytest.raises(pytest.fail.Exception, match="CI=true and Chromium is not available"):
    annotate_helpers.missing("Chromium", "install it")
