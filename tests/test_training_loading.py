"""Model loading lives in ``prefloop.training.loading``; the old ``prefloop.training.models`` path
keeps working for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import re
import sys

import pytest


def test_the_old_models_path_reexports_with_a_deprecation_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = "prefloop.training.models", "prefloop.training.loading"
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {new}; the old path goes away in 0.3")):
        module = importlib.import_module(old)
    loading = importlib.import_module(new)
    for name in ("load_causal_lm", "load_tokenizer", "resolve_model", "tiny_model_dir", "OFFLINE_SMOLLM2"):
        assert getattr(module, name) is getattr(loading, name)
