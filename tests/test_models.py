"""Model factory, backbone files, head replacement, stage freezing and lr groups."""

import pytest
import torch

from spectral_ray.models import (
    BackboneMismatch,
    CorruptCheckpoint,
    backbone_state,
    create_model,
    freeze_stages,
    head_prefixes,
    input_normalization,
    is_backbone_file,
    load_backbone,
    model_stages,
    param_groups,
    read_backbone,
    replace_head,
    save_backbone,
)
from spectral_ray.weights import load_pretrained


@pytest.mark.parametrize("name", ["test_resnet", "resnet10t", "test_vit", "test_efficientnet", "test_convnext"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_factory_shapes(name, in_chans):
    size = 32
    kwargs = {"img_size": size} if "vit" in name else {}
    m = create_model(name, in_chans=in_chans, num_classes=3, **kwargs).eval()
    with torch.no_grad():
        out = m(torch.rand(2, in_chans, size, size))
    assert out.shape == (2, 3)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet19", num_classes=2)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    a = create_model("test_resnet", num_classes=4)
    path = save_backbone(a, tmp_path / "b.pt", {"note": "x"})
    assert not list(tmp_path.glob("*.tmp"))
    state, meta = read_backbone(path)
    assert meta["note"] == "x"
    assert not any(k.startswith("fc.") for k in state)  # head left out
    torch.manual_seed(1)
    b = create_model("test_resnet", num_classes=2)  # different head size is fine
    head_before = b.fc.weight.clone()
    load_backbone(b, path)
    sa, sb = backbone_state(a), backbone_state(b)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(b.fc.weight, head_before)  # head untouched
    # the weight loader reads our backbone files too
    c = load_pretrained("test_resnet", in_chans=1, num_classes=2, source="file", file=path)
    assert torch.equal(c.conv1[0].weight, a.conv1[0].weight)


def test_timm_state_dict_file(tmp_path):
    torch.manual_seed(0)
    a = create_model("test_resnet", in_chans=3, num_classes=5)
    torch.save(a.state_dict(), tmp_path / "w.pth")
    b = load_pretrained("test_resnet", in_chans=3, num_classes=5, source="file", file=tmp_path / "w.pth")
    # timm drops a classifier whose size differs from its pretrained_cfg; the backbone must match
    sa = a.state_dict()
    assert all(torch.equal(sa[k], v) for k, v in b.state_dict().items() if not k.startswith(("fc.", "input_norm.")))
    # published weights bring their preprocessing: the architecture's timm pretrained_cfg mean/std
    cfg = b.pretrained_cfg
    assert input_normalization(b) == {"mean": pytest.approx(list(cfg["mean"])), "std": pytest.approx(list(cfg["std"]))}
    c = load_pretrained("test_resnet", in_chans=1, num_classes=2, source="file", file=tmp_path / "w.pth")
    assert torch.allclose(c.layer1[0].conv1.weight, a.layer1[0].conv1.weight)
    assert input_normalization(c)["mean"] == pytest.approx([sum(cfg["mean"]) / 3])  # gray: RGB averaged


def test_mismatch_lists_keys(tmp_path):
    path = save_backbone(create_model("test_resnet", num_classes=2), tmp_path / "b.pt")
    with pytest.raises(BackboneMismatch) as e:
        load_backbone(create_model("resnet10t", num_classes=2), path)
    msg = str(e.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "layer" in msg
    with pytest.raises(BackboneMismatch, match=r"conv1\.0\.weight"):  # in_chans differs: shapes
        load_backbone(create_model("test_resnet", in_chans=3, num_classes=2), path)


def test_corrupt_and_partial_detected(tmp_path):
    path = save_backbone(create_model("test_resnet", num_classes=2), tmp_path / "b.pt")
    data = bytearray(path.read_bytes())
    # flip bytes inside the stored tensor data (the zip's record for the largest tensor)
    mid = len(data) // 2
    for i in range(mid, mid + 64):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint):
        read_backbone(bad)
    part = tmp_path / "part.pt"
    part.write_bytes(path.read_bytes()[: len(data) // 3])
    with pytest.raises(CorruptCheckpoint):
        load_backbone(create_model("test_resnet", num_classes=2), part)
    with pytest.raises(FileNotFoundError):
        read_backbone(tmp_path / "absent.pt")


def test_replace_head():
    m = create_model("test_resnet", num_classes=10)
    replace_head(m, 2)
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    assert head_prefixes(m) == ("fc",)


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_convnext"])
def test_freeze_stages(name):
    kwargs = {"img_size": 32} if "vit" in name else {}
    m = create_model(name, num_classes=2, **kwargs)
    stages = model_stages(m)
    assert len(stages) >= 3
    frozen = set(freeze_stages(m, 1))
    names = [n for n, _ in m.named_parameters()]
    assert frozen and all(not p.requires_grad for n, p in m.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in m.named_parameters() if n not in frozen)
    assert any(n.startswith(stages[0] + ".") for n in frozen)
    assert not any(n.startswith(stages[1] + ".") for n in frozen)
    assert names[0] in frozen  # the stem
    head = head_prefixes(m)
    assert not any(n.startswith(head[0]) for n in frozen)
    all_frozen = set(freeze_stages(m, "all"))
    assert all_frozen == {n for n in names if not n.startswith(head[0] + ".")}
    assert freeze_stages(create_model(name, num_classes=2, **kwargs), 0) == []


def test_param_groups_backbone_lr():
    m = create_model("test_resnet", num_classes=2)
    freeze_stages(m, 1)
    groups = param_groups(m, lr=1e-2, backbone_lr_mult=0.1, weight_decay=0.05)
    by = {g["name"]: g for g in groups}
    assert by["head"]["lr"] == pytest.approx(1e-2) and by["backbone"]["lr"] == pytest.approx(1e-3)
    assert by["backbone_no_decay"]["weight_decay"] == 0 and by["backbone"]["weight_decay"] == 0.05
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in m.parameters() if p.requires_grad}
    assert {id(p) for p in by["head"]["params"] + by["head_no_decay"]["params"]} == {id(m.fc.weight), id(m.fc.bias)}


def test_checksum_catches_changed_tensor(tmp_path):
    path = save_backbone(create_model("test_resnet", num_classes=2), tmp_path / "b.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["conv1.0.weight"][0, 0, 0, 0] += 1e-3  # a valid file, wrong content
    torch.save(payload, path)
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        read_backbone(path)


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_convnext"])
def test_freeze_stages_group_matcher_fallback(name):
    """Without feature_info, timm's group_matcher gives the same frozen set."""
    a = create_model(name, num_classes=2)
    b = create_model(name, num_classes=2)
    del b.feature_info
    assert freeze_stages(a, 2) == freeze_stages(b, 2)


def test_input_normalization_travels_with_the_backbone(tmp_path):
    torch.manual_seed(0)
    a = create_model("test_resnet", in_chans=3, num_classes=4, input_norm=([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]))
    x = torch.rand(2, 3, 32, 32)
    seen = []
    a.conv1[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    a.eval()
    with torch.no_grad():
        ya = a(x)
    mean, std = torch.tensor([0.4, 0.5, 0.6])[:, None, None], torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    torch.testing.assert_close(seen[0], (x - mean) / std)  # the first conv sees normalised input
    path = save_backbone(a, tmp_path / "b.pt")
    b = create_model("test_resnet", in_chans=3, num_classes=4)
    assert input_normalization(b) is None  # random init: raw input
    load_backbone(b, path)  # a backbone file carries its normalisation
    assert input_normalization(b) == input_normalization(a)
    b.fc.load_state_dict(a.fc.state_dict())
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b(x), ya)
    c = load_pretrained("test_resnet", in_chans=3, num_classes=2, source="file", file=path)
    assert input_normalization(c) == input_normalization(a)
    plain = save_backbone(create_model("test_resnet", in_chans=3, num_classes=2), tmp_path / "plain.pt")
    with pytest.raises(BackboneMismatch, match="input_norm.mean"):  # a normalised model, a raw backbone
        load_backbone(create_model("test_resnet", in_chans=3, num_classes=2, input_norm=(0.5, 0.5)), plain)


def test_is_backbone_file_one_rule(tmp_path):
    path = save_backbone(create_model("test_resnet", num_classes=2), tmp_path / "b.pt")
    assert is_backbone_file(path)
    torch.save(create_model("test_resnet", num_classes=2).state_dict(), tmp_path / "plain.pt")
    assert not is_backbone_file(tmp_path / "plain.pt")
    (tmp_path / "x.safetensors").write_bytes(b"{}")
    assert not is_backbone_file(tmp_path / "x.safetensors")
    # another format version is still recognised as a backbone file, and refused with a reason
    payload = torch.load(path, weights_only=True)
    payload["format"] = "spectral-ray-backbone/9"
    torch.save(payload, tmp_path / "future.pt")
    assert is_backbone_file(tmp_path / "future.pt")
    with pytest.raises(CorruptCheckpoint, match="another version"):
        read_backbone(tmp_path / "future.pt")

