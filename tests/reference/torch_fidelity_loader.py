"""Load one metric module of torch-fidelity 0.4.0 for the comparison tests, with or without torchvision.

``import torch_fidelity`` imports its feature extractors, which need torchvision; the metric functions the tests
compare against (``kid_features_to_metric``, ``isc_features_to_metric``, ``calculate_precision_recall_full``)
need only numpy, torch and ``torch_fidelity.helpers``. Without torchvision the module is loaded under a stand-in
package whose ``utils`` (the feature-extraction plumbing) is empty, and ``sys.modules`` is restored afterwards,
so no other test sees the stand-in. Skips the test when torch-fidelity 0.4.0 is not installed
(``pip install torch-fidelity==0.4.0 --no-deps``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types

import pytest

VERSION = "0.4.0"


def torch_fidelity_module(name: str) -> types.ModuleType:
    """Return ``torch_fidelity.<name>`` (e.g. ``"metric_kid"``), or skip the calling test."""
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip(f"torch-fidelity is not installed (pip install torch-fidelity=={VERSION} --no-deps)")
    installed = importlib.metadata.version("torch-fidelity")
    if installed != VERSION:
        pytest.skip(f"the comparison is with torch-fidelity {VERSION}, found {installed}")
    try:
        return importlib.import_module(f"torch_fidelity.{name}")
    except Exception:  # noqa: BLE001 - torchvision missing (ImportError) or built for another torch (RuntimeError)
        pass  # load the module on its own below
    saved = {key: value for key, value in sys.modules.items() if key == "torch_fidelity" or key.startswith("torch_fidelity.")}
    for key in saved:
        del sys.modules[key]
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("torch_fidelity.utils")
    for helper in (
        "create_feature_extractor",
        "extract_featuresdict_from_input_id_cached",
        "resolve_feature_extractor",
        "resolve_feature_layer_for_metric",
    ):
        setattr(utils, helper, None)
    try:
        sys.modules["torch_fidelity"] = package
        sys.modules["torch_fidelity.utils"] = utils
        return importlib.import_module(f"torch_fidelity.{name}")
    finally:
        for key in [key for key in sys.modules if key == "torch_fidelity" or key.startswith("torch_fidelity.")]:
            del sys.modules[key]
        sys.modules.update(saved)
