"""Registry: names, keyword-only builders, duplicates, bad names and arguments, meta-device counts."""
import pytest
from torch import nn

from wsss.errors import UserError
from wsss.models import registry
from wsss.models.registry import build_backbone, build_model, list_models, parameter_count, register_model


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that the test may add to."""
    registry._load_all()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_builtin_names():
    assert {"wideresnet38", "vgg16", "resnet50", "resnet101", "tiny"} <= set(list_models(kind="backbone"))
    assert {"cam", "aff"} <= set(list_models(kind="network"))
    assert list_models() == sorted(list_models())


def test_duplicate_name_raises(scratch_registry):
    @register_model("scratch_net")
    def build(*, width: int = 2):
        return nn.Conv2d(3, width, 1)

    with pytest.raises(ValueError, match="already registered"):
        register_model("scratch_net")(build)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny", kind="backbone")(build)
    assert build_model("scratch_net", width=5).out_channels == 5


def test_builders_must_be_keyword_only(scratch_registry):
    def positional(width):
        return nn.Identity()

    with pytest.raises(ValueError, match="keyword-only"):
        register_model("scratch_positional")(positional)
    with pytest.raises(ValueError, match="kind"):
        register_model("scratch_kind", kind="head")


def test_unknown_name_and_bad_arguments():
    with pytest.raises(UserError, match=r"unknown model 'resnet18': expected one of .*wideresnet38"):
        build_model("resnet18")
    with pytest.raises(UserError, match="model 'cam'.*widht"):
        build_model("cam", backbone="tiny", widht=3)
    with pytest.raises(UserError, match="'cam' is not a backbone"):
        build_backbone("cam")


def test_parameter_count_on_meta_matches_real():
    real = sum(p.numel() for p in build_model("cam", backbone="tiny").parameters())
    assert parameter_count("cam", backbone="tiny") == real
    assert 100_000 < parameter_count("tiny") < 1_000_000


def test_a_broken_model_module_is_named_when_its_model_is_asked_for(monkeypatch):
    registry._load_all()
    monkeypatch.setattr(registry, "_BROKEN", {"wsss.models.gone": "ImportError: boom"})
    with pytest.raises(UserError, match=r"unknown model 'gone'.*wsss\.models\.gone failed to import \(ImportError"):
        build_model("gone")
    assert build_model("tiny") is not None


def test_check_family_accepts_only_networks_of_the_family():
    seg = list_models(kind="network", family="seg")
    assert "deeplabv2_resnet101" in seg and "cam" not in seg
    registry.check_family("deeplabv2_resnet101", "seg")
    registry.check_family("wsfcn", "single")
    with pytest.raises(UserError) as info:
        registry.check_family("cam", "seg", option="seg_infer.model")
    assert str(info.value) == f"seg_infer.model cam: not a network of the seg family (expected one of {', '.join(seg)})"
    with pytest.raises(UserError, match="--model tiny: not a network of the tiny family"):
        registry.check_family("tiny", "tiny")  # a backbone, whose family defaults to its name, is no network
    with pytest.raises(UserError, match="--model nope"):
        registry.check_family("nope", "single")
