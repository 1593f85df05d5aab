"""Published starting points: local timm files, the RadImageNet Keras->timm conversion, safe loading."""

import importlib.util
import os
import time

import h5py
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from spectral_ray import weights as W

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_keras_resnet50(seed=0, top=False):
    """Keras ResNet50 weights, shapes written down from the architecture (not from the mapping)."""
    rng = np.random.default_rng(seed)
    w = {}

    def conv(name, k, cin, cout):
        w[f"{name}_conv/kernel:0"] = (rng.standard_normal((k, k, cin, cout), dtype=np.float32) * (2 / (k * k * cin)) ** 0.5)
        w[f"{name}_conv/bias:0"] = rng.standard_normal(cout, dtype=np.float32) * 0.1

    def bn(name, c):
        w[f"{name}_bn/gamma:0"] = 1 + 0.1 * rng.standard_normal(c, dtype=np.float32)
        w[f"{name}_bn/beta:0"] = 0.1 * rng.standard_normal(c, dtype=np.float32)
        w[f"{name}_bn/moving_mean:0"] = 0.1 * rng.standard_normal(c, dtype=np.float32)
        w[f"{name}_bn/moving_variance:0"] = 0.5 + rng.random(c, dtype=np.float32)

    conv("conv1", 7, 3, 64)
    bn("conv1", 64)
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=2):
        for b in range(1, blocks + 1):
            p = f"conv{stage}_block{b}"
            if b == 1:
                conv(p + "_0", 1, cin, 4 * width)
                bn(p + "_0", 4 * width)
            conv(p + "_1", 1, cin, width)
            bn(p + "_1", width)
            conv(p + "_2", 3, width, width)
            bn(p + "_2", width)
            conv(p + "_3", 1, width, 4 * width)
            bn(p + "_3", 4 * width)
            cin = 4 * width
    if top:
        w["predictions/kernel:0"] = rng.standard_normal((2048, 1000), dtype=np.float32) * 0.01
        w["predictions/bias:0"] = np.zeros(1000, np.float32)
    return w


def write_keras_h5(path, weights):
    """The Keras 2 `save_weights` HDF5 layout: root attr layer_names, per-layer attr weight_names."""
    layers = {}
    for k, v in weights.items():
        layer, wname = k.split("/")
        layers.setdefault(layer, []).append((f"{layer}/{wname}", v))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in ["input_1", "conv1_pad", *layers]])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        f.create_group("conv1_pad").attrs["weight_names"] = np.array([], dtype="S1")
        for layer, items in layers.items():
            g = f.create_group(layer)
            g.attrs["weight_names"] = np.array([n.encode() for n, _ in items])
            for n, v in items:
                g.create_dataset(n, data=v)


@pytest.fixture(scope="module")
def keras_weights():
    return fake_keras_resnet50()


@pytest.fixture(scope="module")
def converted(keras_weights):
    return W.keras_resnet50_to_timm(keras_weights)


@pytest.fixture(scope="module")
def r50_keys():
    m = timm.create_model("resnet50", pretrained=False)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def test_keras_layer_names_map_to_timm():
    assert W.keras_name_to_timm("conv1_conv") == "conv1"
    assert W.keras_name_to_timm("conv1_bn") == "bn1"
    assert W.keras_name_to_timm("conv2_block1_1_conv") == "layer1.0.conv1"
    assert W.keras_name_to_timm("conv3_block4_3_bn") == "layer2.3.bn3"
    assert W.keras_name_to_timm("conv4_block1_0_conv") == "layer3.0.downsample.0"
    assert W.keras_name_to_timm("conv5_block1_0_bn") == "layer4.0.downsample.1"
    assert W.keras_name_to_timm("conv5_block3_2_conv") == "layer4.2.conv2"
    assert W.keras_name_to_timm("predictions") == "fc"
    assert W.keras_name_to_timm("conv1_pad") is None and W.keras_name_to_timm("avg_pool") is None


def test_converted_layout_is_timm_resnet50(converted, r50_keys, keras_weights):
    backbone = {k: s for k, s in r50_keys.items() if not k.startswith("fc.")}
    assert set(converted) == set(backbone)  # every timm key, num_batches_tracked included; nothing else
    for k, s in backbone.items():
        assert tuple(converted[k].shape) == s, k
    k = keras_weights["conv3_block2_2_conv/kernel:0"]  # (3, 3, 128, 128): (kh, kw, in, out)
    np.testing.assert_array_equal(converted["layer2.1.conv2.weight"].numpy(), k.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(converted["layer3.0.bn2.weight"].numpy(), keras_weights["conv4_block1_2_bn/gamma:0"])
    top = W.keras_resnet50_to_timm(fake_keras_resnet50(top=True))
    assert top["fc.weight"].shape == (1000, 2048) and top["fc.bias"].shape == (1000,)
    model = timm.create_model("resnet50", pretrained=False)
    model.load_state_dict(top, strict=True)  # with the top: the exact full timm layout


def test_bias_and_eps_folding_is_exact(converted, keras_weights):
    # Keras: y = BN_keras(conv(x) + b);  timm: y = BN_torch(conv(x)) with the converted buffers
    x = torch.randn(2, 256, 9, 9, dtype=torch.float64)
    kw = {n: torch.from_numpy(keras_weights[f"conv2_block2_{n}"]).double() for n in
          ("1_conv/kernel:0", "1_conv/bias:0", "1_bn/gamma:0", "1_bn/beta:0", "1_bn/moving_mean:0", "1_bn/moving_variance:0")}
    y = F.conv2d(x, kw["1_conv/kernel:0"].permute(3, 2, 0, 1), kw["1_conv/bias:0"])
    y_keras = (y - kw["1_bn/moving_mean:0"][:, None, None]) / torch.sqrt(kw["1_bn/moving_variance:0"][:, None, None] + W.KERAS_BN_EPS)
    y_keras = y_keras * kw["1_bn/gamma:0"][:, None, None] + kw["1_bn/beta:0"][:, None, None]
    c = {k: v.double() for k, v in converted.items() if k.startswith("layer1.1.")}
    y_t = F.batch_norm(F.conv2d(x, c["layer1.1.conv1.weight"]), c["layer1.1.bn1.running_mean"], c["layer1.1.bn1.running_var"],
                       c["layer1.1.bn1.weight"], c["layer1.1.bn1.bias"], training=False, eps=1e-5)
    torch.testing.assert_close(y_t, y_keras, rtol=1e-5, atol=1e-5)


def test_unknown_keras_layers_refused(keras_weights):
    bad = dict(keras_weights)
    bad["block_extra_conv/kernel:0"] = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="block_extra_conv"):
        W.keras_resnet50_to_timm(bad)


def _script():
    spec = importlib.util.spec_from_file_location("convert_radimagenet", os.path.join(REPO, "scripts", "convert_radimagenet.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_radimagenet_h5_to_checkpoint_to_model(tmp_path, keras_weights, capsys):
    h5 = tmp_path / "RadImageNet-ResNet50_notop.h5"
    write_keras_h5(h5, keras_weights)
    read = W.read_keras_h5(h5)
    assert set(read) == {k.replace(":0", "") for k in keras_weights}
    out = tmp_path / "radimagenet_resnet50.pth"
    assert _script().main([str(h5), str(out)]) == 0
    assert "timm resnet50 layout" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    model = W.load_pretrained("resnet50", in_chans=1, num_classes=2, source="radimagenet", file=str(out))
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))  # RGB filters summed
    torch.testing.assert_close(model.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    assert model.fc.weight.shape == (2, 2048)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    with pytest.raises(ValueError, match="convert_radimagenet.py"):
        W.load_pretrained("resnet50", num_classes=2, source="radimagenet", file=str(h5))
    assert _script().main([str(tmp_path / "missing.h5"), str(out)]) == 1


def test_local_timm_file_and_in_chans(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet10t.pth"
    torch.save(src.state_dict(), path)
    m = W.load_pretrained("resnet10t", in_chans=1, num_classes=2, source="file", file=str(path))
    torch.testing.assert_close(m.conv1[0].weight, src.conv1[0].weight.sum(1, keepdim=True))
    torch.testing.assert_close(m.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    assert m.fc.weight.shape == (2, 512)
    m3 = W.load_pretrained("resnet10t", in_chans=3, num_classes=1000, source=f"file:{path}")
    torch.testing.assert_close(m3.fc.weight, src.fc.weight)  # same-size classifier is kept
    from safetensors.torch import save_file

    st = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    ms = W.load_pretrained("resnet10t", in_chans=3, num_classes=2, source=str(st))
    torch.testing.assert_close(ms.conv1[0].weight, src.conv1[0].weight)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, wrapped)
    mw = W.load_pretrained("resnet10t", in_chans=3, num_classes=2, source="file", file=str(wrapped))
    torch.testing.assert_close(mw.layer1[0].conv2.weight, src.layer1[0].conv2.weight)


def test_mismatched_file_lists_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(W.WeightsMismatch) as e:
        W.load_pretrained("resnet10t", in_chans=3, num_classes=2, source="file", file=str(path))
    msg = str(e.value)
    assert "missing keys: " in msg and "conv1.0.weight" in msg
    assert "unexpected keys: " in msg and "conv1.weight" in msg
    assert str(path) in msg
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        W.load_pretrained("resnet10t", num_classes=2, source="file", file=str(tmp_path / "nothing.pth"))


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_checkpoints_load_weights_only(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        W.load_pretrained("resnet10t", num_classes=2, source="file", file=str(path))
    assert not marker.exists()


def test_timm_hub_unreachable_fails_fast_with_advice(monkeypatch):
    monkeypatch.setattr(W, "_hub_reachable", lambda timeout: False)  # as on this machine; never touch the network
    t0 = time.time()
    with pytest.raises(W.WeightsUnavailable) as e:
        W.load_pretrained("resnet10t", in_chans=1, num_classes=2, source="timm")
    assert time.time() - t0 < 30
    msg = str(e.value)
    assert "not reachable" in msg and "source='file'" in msg and "resnet10t.pth" in msg


def test_weights_spec_parsing():
    assert W.parse_weights_spec("timm") == ("timm", None)
    assert W.parse_weights_spec("file:/w/a.pth") == ("file", "/w/a.pth")
    assert W.parse_weights_spec("radimagenet:/w/r.pth") == ("radimagenet", "/w/r.pth")
    assert W.parse_weights_spec("/w/a.safetensors") == ("file", "/w/a.safetensors")
    with pytest.raises(ValueError):
        W.parse_weights_spec("imagenet")
