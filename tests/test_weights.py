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
from spectral_ray.models import input_normalization

torch.set_num_threads(1)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
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
    keras_mean = [m / 255 for m in W.KERAS_CAFFE_MEAN_BGR]  # preprocess_input, then rescale=1/255
    torch.testing.assert_close(state["input_norm.mean"].flatten(), torch.tensor(keras_mean))
    torch.testing.assert_close(state["input_norm.std"].flatten(), torch.ones(3))
    model = W.load_pretrained("resnet50", in_chans=1, num_classes=2, source="radimagenet", file=str(out))
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))  # RGB filters summed
    torch.testing.assert_close(model.layer3[2].conv2.weight, state["layer3.2.conv2.weight"])
    assert model.fc.weight.shape == (2, 2048)
    assert input_normalization(model) == {"mean": pytest.approx([np.mean(keras_mean)]), "std": [1.0]}
    # the Keras file itself loads to the same model (converted in memory)
    direct = W.load_pretrained("resnet50", in_chans=1, num_classes=2, source="radimagenet", file=str(h5))
    x = torch.rand(2, 1, 32, 32)
    direct.fc.load_state_dict(model.fc.state_dict())
    model.eval(), direct.eval()
    with torch.no_grad():
        torch.testing.assert_close(direct(x), model(x))
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


# ----------------------------------------------------------------------------- RadImageNet's PyTorch release


class ReleaseBackbone(torch.nn.Module):
    """The module RadImageNet's PyTorch checkpoint was saved from (acl/acl_pytorch_train.ipynb):
    ``nn.Sequential(*list(resnet50().children())[:9])`` as ``self.backbone``."""

    def __init__(self, arch="resnet50"):
        import torchvision

        super().__init__()
        self.backbone = torch.nn.Sequential(*list(getattr(torchvision.models, arch)(weights=None).children())[:9])
        g = torch.Generator().manual_seed(0)
        for m in self.modules():  # non-trivial batch-norm statistics, so a misplaced layer shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))

    def forward(self, x):
        return self.backbone(x)


def release_checkpoint(path, arch="resnet50"):
    torch.manual_seed(1)
    net = ReleaseBackbone(arch).eval()
    torch.save(net.state_dict(), path)
    return net


def test_radimagenet_pytorch_release_loads_with_its_preprocessing(tmp_path):
    path = tmp_path / "ResNet50.pt"
    release = release_checkpoint(path)
    keys = list(torch.load(path, weights_only=True))
    assert keys[0] == "backbone.0.weight" and "backbone.7.2.bn3.running_var" in keys  # the real layout
    model = W.load_pretrained("resnet50", in_chans=3, num_classes=2, source=f"radimagenet:{path}")
    assert input_normalization(model) == {"mean": [0.5] * 3, "std": [0.5] * 3}
    model.reset_classifier(0)
    model.eval()
    x = torch.rand(2, 3, 64, 64)  # raw [0, 1] images
    with torch.no_grad():
        ours = model(x)
        theirs = release((x * 255 - 127.5) * 2 / 255).flatten(1)  # the release's own preprocessing
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)  # float32 rounding through 50 layers
    gray = W.load_pretrained("resnet50", in_chans=1, num_classes=2, source="radimagenet", file=str(path))
    torch.testing.assert_close(gray.conv1.weight, release.backbone[0].weight.sum(1, keepdim=True))


def test_radimagenet_unexpected_layouts_are_named(tmp_path):
    release_checkpoint(tmp_path / "r.pt", arch="resnet18")  # same layout, smaller
    state = torch.load(tmp_path / "r.pt", weights_only=True)
    wrapped = tmp_path / "wrapped.pt"  # the fine-tuned nn.Sequential(backbone, classifier) of the example
    torch.save({f"0.{k}": v for k, v in state.items()} | {"1.linear.weight": torch.zeros(2, 512)}, wrapped)
    with pytest.raises(W.WeightsMismatch, match=r"timm keys with input_norm"):
        W.load_pretrained("resnet18", num_classes=2, source="radimagenet", file=str(wrapped))
    odd = tmp_path / "odd.pt"
    torch.save(state | {"backbone.9.weight": torch.zeros(1)}, odd)
    with pytest.raises(W.WeightsMismatch, match=r"layout of RadImageNet's PyTorch ResNet-50.*backbone\.9\.weight"):
        W.load_pretrained("resnet18", num_classes=2, source="radimagenet", file=str(odd))
    short = tmp_path / "short.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("backbone.7.")}, short)
    with pytest.raises(W.WeightsMismatch, match=r"missing keys: layer4"):  # strict: every layer must be there
        W.load_pretrained("resnet18", num_classes=2, source="radimagenet", file=str(short))
    plain = tmp_path / "timm.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), plain)
    with pytest.raises(W.WeightsMismatch, match="convert_radimagenet.py"):  # no preprocessing to go by
        W.load_pretrained("resnet18", num_classes=2, source="radimagenet", file=str(plain))


# ----------------------------------------------------------------------------- preprocessing


def test_timm_imagenet_start_sees_normalised_inputs(monkeypatch):
    def offline_hub(name, in_chans, num_classes, timeout, kwargs):  # the hub's model, without the download
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)

    monkeypatch.setattr(W, "_from_hub", offline_hub)
    model = W.load_pretrained("resnet10t", in_chans=3, num_classes=2, source="timm")
    cfg = model.pretrained_cfg
    assert input_normalization(model) == {"mean": pytest.approx(list(cfg["mean"])), "std": pytest.approx(list(cfg["std"]))}
    seen = []
    model.conv1[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        model(x)
    mean, std = torch.tensor(cfg["mean"])[:, None, None], torch.tensor(cfg["std"])[:, None, None]
    torch.testing.assert_close(seen[0], (x - mean) / std)


def test_priority_with_folded_normalisation_equals_explicit():
    """The priority of a model whose normalisation is a layer (gradients w.r.t. the raw image)
    equals the priority computed with the normalisation applied outside, by autograd through it."""
    from spectral_ray import spectrum
    from spectral_ray.models import create_model, set_input_normalization

    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.manual_seed(0)
    bare = create_model("test_resnet", in_chans=3, num_classes=2)
    folded = create_model("test_resnet", in_chans=3, num_classes=2)
    folded.load_state_dict(bare.state_dict())
    set_input_normalization(folded, mean, std)
    x = torch.rand(6, 3, 32, 32)
    y = torch.arange(6) % 2
    p_folded = spectrum.learning_priority(folded, x, y, normalize=None)

    bare.eval()
    raw = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(bare((raw - mean[:, None, None]) / std[:, None, None]), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, raw)
    p_explicit = spectrum.radial_psd(g.sum(1)).mean(0)
    torch.testing.assert_close(p_folded, p_explicit.float(), rtol=1e-5, atol=1e-12)
    p_raw = spectrum.learning_priority(bare, x, y, normalize=None)  # and the normalisation does matter
    assert not torch.allclose(p_raw, p_folded, rtol=1e-2)


def test_preprocessing_override_and_errors(tmp_path):
    path = tmp_path / "r10.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
    ident = W.load_pretrained("resnet10t", num_classes=2, source="file", file=str(path), preprocessing="identity")
    assert input_normalization(ident) == {"mean": [0.0] * 3, "std": [1.0] * 3}
    own = W.load_pretrained("resnet10t", in_chans=1, num_classes=2, source="file", file=str(path),
                            preprocessing={"mean": [0.2], "std": [0.1]})
    assert input_normalization(own) == {"mean": [0.2], "std": [0.1]}
    with pytest.raises(ValueError, match="auto, identity"):
        W.load_pretrained("resnet10t", num_classes=2, source="file", file=str(path), preprocessing="imagenet")


@pytest.mark.parametrize("kind", ["imagenet_file", "radimagenet_release"])
def test_published_starts_are_fine_tuned_on_normalised_inputs(kind, tmp_path, monkeypatch):
    """Through the whole trial (store, backbone file, fine-tuning, priorities): the first conv sees
    the start's normalised input during fine-tuning, and the result records the normalisation."""
    from spectral_ray import training
    from spectral_ray.config import TrialConfig
    from spectral_ray.experiment import run_finetune

    if kind == "imagenet_file":
        torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "w.pth")
        spec, mean = f"file:{tmp_path / 'w.pth'}", float(np.mean(timm.create_model("resnet18").pretrained_cfg["mean"]))
    else:
        release_checkpoint(tmp_path / "ResNet.pt", arch="resnet18")
        spec, mean = f"radimagenet:{tmp_path / 'ResNet.pt'}", 0.5
    seen = []
    real_fit = training.fit

    def watched_fit(model, *args, **kwargs):
        hook = model.conv1.register_forward_pre_hook(lambda m, a: seen.append(float(a[0].min())))
        try:
            return real_fit(model, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(training, "fit", watched_fit)
    cfg = TrialConfig(model="resnet18", source="none", source_weights=spec, size=32, target_n=48, psd_images=8,
                      finetune={"epochs": 1}, store=str(tmp_path / "store"))
    final = run_finetune(cfg)
    assert final["input_mean"] == pytest.approx([mean]) and len(final["input_std"]) == 1
    assert seen and min(seen) < -0.4  # raw images are >= 0; normalised ones are not



def test_pretraining_from_published_weights_keeps_their_normalisation(tmp_path, monkeypatch):
    """Continued pretraining on a source (the paper's edited arms) trains, measures and saves the
    model with the start's normalisation; the stored backbone hands it to fine-tuning."""
    from spectral_ray.data import ImageDataset, registry
    from spectral_ray.models import create_model, load_backbone
    from spectral_ray.store import PretrainConfig, get_or_train, load_meta
    from spectral_ray.training import Recipe

    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy())

    @registry.register_dataset("_weights_test_source", kind="source", cached=False)
    def tiny(size=16, channels=1, n=24, seed=0):
        rng = np.random.default_rng(seed)
        return ImageDataset(rng.random((n, channels, size, size), dtype=np.float32), np.arange(n) % 3, ["a", "b", "c"])

    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "w.pth")
    config = PretrainConfig(source="_weights_test_source", source_params={"size": 16, "channels": 1, "n": 24, "seed": 0},
                            model="resnet10t", init=f"file:{tmp_path / 'w.pth'}", recipe=Recipe(epochs=1, batch_size=8))
    assert "-prep" in config.code_version  # published-weight starts are keyed with their preprocessing version
    path = get_or_train(config, root=tmp_path / "store")
    want = {"mean": pytest.approx([float(np.mean(IMAGENET_MEAN))]), "std": pytest.approx([float(np.mean(IMAGENET_STD))])}
    assert load_meta(path)["history"]["input_normalization"] == want
    model = create_model("resnet10t", in_chans=1, num_classes=3)
    load_backbone(model, path)
    assert input_normalization(model) == want
