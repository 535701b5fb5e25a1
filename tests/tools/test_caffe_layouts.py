"""tools/caffe_layouts.py: the resnet101_caffe layout (DeepLab-v2's MSRA ResNet-101) on real names and shapes."""
import numpy as np
import pytest

# MSRA ResNet-101 Caffe naming (retrain.md §1.1): res2a..c, res3a + b1..b3, res4a + b1..b22, res5a..c.
BLOCKS = {2: ("a", "b", "c"), 3: ("a", "b1", "b2", "b3"), 4: ("a",) + tuple(f"b{k}" for k in range(1, 23)),
          5: ("a", "b", "c")}
CHANNELS = {2: 256, 3: 512, 4: 1024, 5: 2048}


def conv_unit(name: str, shape: tuple) -> list:
    """A conv and its BatchNorm (mean, var, factor) and Scale (gamma, beta) layers: (name, blob shapes)."""
    c = shape[0]
    suffix = name[len("res"):] if name.startswith("res") else "_" + name
    return [(name, [shape]), (f"bn{suffix}", [(c,), (c,), (1,)]), (f"scale{suffix}", [(c,), (c,)])]


def resnet101_layers() -> list:
    layers = conv_unit("conv1", (64, 3, 7, 7))
    cin = 64
    for stage, blocks in BLOCKS.items():
        cout = CHANNELS[stage]
        mid = cout // 4
        for i, block in enumerate(blocks):
            shapes = {"2a": (mid, cin if i == 0 else cout, 1, 1), "2b": (mid, mid, 3, 3), "2c": (cout, mid, 1, 1)}
            if i == 0:
                shapes["1"] = (cout, cin, 1, 1)
            for branch, shape in shapes.items():
                layers += conv_unit(f"res{stage}{block}_branch{branch}", shape)
        cin = cout
    return layers + [("fc1000", [(1000, 2048), (1000,)])]


def layer(tool, name, *blobs):
    return tool.CaffeLayer(name, "", [np.asarray(b, np.float32) for b in blobs])


def test_resnet_unit_hand_worked(caffe_layouts):
    unit = caffe_layouts.resnet_unit
    assert unit("res4b22_branch2c") == ("res", "layer4.block23.increase")
    assert unit("bn3a_branch1") == ("bn", "layer3.block1.shortcut")
    assert unit("scale2c_branch2b") == ("scale", "layer2.block3.conv3x3")
    assert unit("res3b1_branch2a") == ("res", "layer3.block2.reduce")
    assert unit("bn_conv1") == ("bn", "layer1.conv1")
    assert unit("res6a_branch2a") is None and unit("res2a_branch2d") is None and unit("pool1") is None


def test_batchnorm_statistics_divide_by_the_scale_factor(caffe_layouts):
    mean, var = caffe_layouts.batchnorm_statistics([np.array([2.0, 4.0]), np.array([6.0, 8.0]), np.array([2.0])])
    assert np.array_equal(mean, [1.0, 2.0]) and np.array_equal(var, [3.0, 4.0])
    mean, var = caffe_layouts.batchnorm_statistics([np.ones(2), np.ones(2), np.zeros(1)])
    assert not mean.any() and not var.any()  # Caffe's convention for a zero factor


def test_real_resnet101_layers_load_strictly_into_resnet101_caffe(caffe_tool, conversion):
    layers = [caffe_tool.CaffeLayer(name, "", [np.broadcast_to(np.float32(1), s) for s in shapes])
              for name, shapes in resnet101_layers()]
    arrays, unmapped = caffe_tool.collect(layers, caffe_tool.LAYOUTS["resnet101_caffe"])
    assert unmapped == [] and len(arrays) == 520 + 2  # 104 convs + 104 BN x 4, and the classifier
    assert arrays["layer3.block1.reduce.conv.weight"].shape == (128, 256, 1, 1)
    assert arrays["layer2.block1.shortcut.conv.weight"].shape == (256, 64, 1, 1)
    fitted = conversion.fit_to_backbone(arrays, "resnet101_caffe", "init.caffemodel")  # fc.* dropped there
    convs_and_bn = 42_394_816 + 2 * 105_344  # retrain.md §1.1: conv weights + BN (4 values per channel)
    assert sum(a.size for k, a in fitted.items() if not k.startswith("fc.")) == convs_and_bn


def test_resnet_layout_skips_msc_copies_and_reports_the_rest(caffe_tool):
    layout = caffe_tool.LAYOUTS["resnet101_caffe"]
    layers = [layer(caffe_tool, "res2a_branch1", np.ones((4, 2, 1, 1))),
              layer(caffe_tool, "res2a_branch1_res075", np.ones((4, 2, 1, 1))),
              layer(caffe_tool, "bn2a_branch1", [2.0, 4.0], [6.0, 8.0], [2.0]),
              layer(caffe_tool, "res2a_branch2a", np.ones((1, 2, 1, 1)), np.ones(1)),
              layer(caffe_tool, "fc1_voc12_c0", np.ones((3, 8, 3, 3)), np.ones(3)),
              layer(caffe_tool, "fc1_voc12_c1", np.ones((3, 8, 3, 3)), np.ones(3))]
    arrays, unmapped = caffe_tool.collect(layers, layout)
    assert sorted(arrays) == ["fc.bias", "fc.weight", "layer2.block1.shortcut.bn.running_mean",
                              "layer2.block1.shortcut.bn.running_var", "layer2.block1.shortcut.conv.weight"]
    assert np.array_equal(arrays["layer2.block1.shortcut.bn.running_var"], [3.0, 4.0])
    assert unmapped == ["res2a_branch2a (2 blobs)", "fc1_voc12_c1 (2 blobs)"]


@pytest.mark.parametrize("name, blobs", [("conv1_1", 1), ("fc8", 2), ("conv5_4", 2)])
def test_vgg16_layout_takes_only_its_layers_with_two_blobs(caffe_tool, name, blobs):
    vgg = caffe_tool.LAYOUTS["vgg16"]
    assert vgg.keys(layer(caffe_tool, name, *[np.ones(2)] * blobs)) is None
