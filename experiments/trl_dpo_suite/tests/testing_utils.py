"""Stand-ins for the helpers trl's test file imports from trl's own ``tests/testing_utils.py`` (not shipped in trl's
wheel). Each ``require_*`` skips when its package is missing; vision tests are skipped because no vision-language
stand-in is built (see README.md), and the Ampere check is false on this CPU."""

import importlib.util

import pytest


def _missing(package):
    return importlib.util.find_spec(package) is None


class TrlTestCase:
    @pytest.fixture(autouse=True)
    def set_tmp_dir(self, tmp_path):
        self.tmp_dir = str(tmp_path)


def is_ampere_or_newer():
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


require_peft = pytest.mark.skipif(_missing("peft"), reason="peft is not installed")
require_bitsandbytes = pytest.mark.skipif(_missing("bitsandbytes"), reason="bitsandbytes is not installed")
require_kernels = pytest.mark.skipif(_missing("kernels"), reason="kernels is not installed")
require_liger_kernel = pytest.mark.skipif(_missing("liger_kernel"), reason="liger-kernel is not installed")
require_ampere_or_newer = pytest.mark.skipif(not is_ampere_or_newer(), reason="needs an Ampere or newer GPU")
require_vision = pytest.mark.skip(reason="no vision-language stand-in models are built here")
