"""torch's deprecation notices about the machinery initscope drives are filtered by message and by the
torch module that warns, whatever their category (2.13: DeprecationWarning, 2.14: FutureWarning)."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("torch")

from initscope.torch.loading import ignore_torch_deprecations  # noqa: E402

MESSAGE = "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."


def emitted(category, module: str) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_torch_deprecations()
        warnings.warn_explicit(MESSAGE, category, "_script.py", 1, module=module)
    return caught


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning, UserWarning])
def test_torchs_own_notice_is_ignored_in_any_category(category):
    assert emitted(category, "torch.jit._script") == []


def test_the_same_words_from_other_code_are_not_hidden():
    assert len(emitted(FutureWarning, "my_model")) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_torch_deprecations()
        warnings.warn_explicit("something else is deprecated", FutureWarning, "_script.py", 1,
                               module="torch.jit._script")
    assert len(caught) == 1
