"""Each TrialConfig key has one role, and what reads keys by kind derives from those roles."""

from __future__ import annotations

import pandas as pd
import pytest

from spectral_ray.config import ROLES, TrialConfig, field_roles, fields_with_role, name_labels


def test_every_field_has_one_known_role():
    roles = field_roles()
    assert list(roles) == list(TrialConfig.model_fields)
    assert set(roles.values()) <= set(ROLES)


def test_a_new_field_without_a_role_fails():
    class Extended(TrialConfig):
        new_key: int = 0

    with pytest.raises(ValueError, match=r"TrialConfig.new_key has no role; give it one of backbone"):
        field_roles(Extended)


def test_a_field_with_an_unknown_role_fails():
    from spectral_ray.config import _role

    class Extended(TrialConfig):
        new_key: int = _role("sideways", 0)

    with pytest.raises(ValueError, match=r"unknown role 'sideways'"):
        field_roles(Extended)
    with pytest.raises(ValueError, match=r"unknown role\(s\) 'sideways'; roles: backbone"):
        fields_with_role("sideways")


def test_family_trial_keys_take_their_role_from_the_registry():
    from spectral_ray.artifacts import FAMILIES
    from spectral_ray.editing import EDITS

    assert FAMILIES.trial_keys() and EDITS.trial_keys()
    assert all(field_roles()[k] == "shortcut" for k in FAMILIES.trial_keys())
    assert all(field_roles()[k] == "backbone" for k in EDITS.trial_keys())
    # declared by a family, so not on the field as well (one place)
    for key in FAMILIES.trial_keys() + EDITS.trial_keys():
        assert "role" not in (TrialConfig.model_fields[key].json_schema_extra or {})


def test_backbone_identity_reads_the_backbone_and_shared_keys():
    ident = TrialConfig(source="medical").backbone_identity()
    keys = fields_with_role("backbone", "shared")
    edit_keys = {k for k in keys if k.startswith("edit")}
    assert set(ident) == (set(keys) - edit_keys) | {"edit"}


def test_backbone_keeps_the_store_keys_and_seeds_of_existing_results():
    """The values main computed before the roles existed (stored backbones keep their keys)."""
    cfg = TrialConfig()
    assert cfg.backbone().key() == "ad2867d2e2f7f60df699c10ff0157e0e91ff62d06c7b6cbe3acbd6e9daa2c183"
    assert (cfg.derived_seed("finetune"), cfg.derived_seed("artifact")) == (1186451820, 1108550442)
    cfg = TrialConfig(source="medical", edit="blend_lowpass", edit_strength=0.5, edit_omega=0.3, seed=2)
    # an edited source's key holds the edit code's version: it moved once when families.py took the
    # generic Registry (issue 23; was 3aef2db3…, code version store1-data2-dcfa518fe786)
    assert cfg.backbone().code_version == "store1-data2-9cd16cc3f65b"
    assert cfg.backbone().key() == "5ab5c9a827a303ea294074c4e1977fd1d69b4e5e5e7bc268606a618c6c3fb1da"
    assert (cfg.derived_seed("finetune"), cfg.derived_seed("artifact")) == (1472771409, 1751380268)
    cfg = TrialConfig(source="none", seed=3)
    assert (cfg.derived_seed("finetune"), cfg.derived_seed("artifact")) == (188905441, 1922925582)


def test_the_trials_backbone_runs_on_its_threads():
    cfg = TrialConfig(source="medical", seed=1, threads=2)
    assert cfg.backbone().recipe.num_threads == 2


def test_trial_names_read_as_before():
    """Trial folder names of existing experiments: the labels and their order must not move."""
    assert name_labels() == (("source", ""), ("seed", "seed"), ("edit", ""), ("edit_strength", "s"),
                             ("edit_omega", "e"), ("target", ""), ("artifact", ""), ("artifact_omega", "w"),
                             ("artifact_amplitude", "a"), ("degradation", "d"), ("fold", "f"))


def test_units_columns_derive_from_roles():
    from analysis.units import BACKBONE_INPUTS, FINETUNE_INPUTS, PROBE_INPUTS, SHORTCUT_INPUTS

    assert {"source_label", "edit", "edit_strength", "edit_omega", "edit_params/", "seed", "pretrain/", "model",
            "size", "channels", "data_seed", "source_params/"} <= set(BACKBONE_INPUTS)
    assert {"artifact_omega", "artifact_amplitude", "artifact_params/", "artifact_resolved/"} <= set(SHORTCUT_INPUTS)
    assert "degradation" not in SHORTCUT_INPUTS  # the model's own key, not the shortcut's description
    assert {"target", "fold", "finetune_seed_used", "finetune/", "model"} <= set(FINETUNE_INPUTS)
    assert not set(FINETUNE_INPUTS) & {"psd_images", "threads", "store", "artifact"}
    assert PROBE_INPUTS == ["target", "target_n", "target_params/", "data_seed", "size", "channels", "psd_images"]


def test_units_backbone_splits_by_edit_strength_only_for_edited():
    from analysis.units import identify

    base = dict(kind="finetune", source="medical", seed=0, edit="blend_lowpass", target="ct_lesion",
                artifact="band", degradation=0.0, fold=0)
    ft = pd.DataFrame([{**base, "edit_strength": 0.5}, {**base, "edit_strength": 0.5000001},
                       {**base, "edit": "none", "edit_strength": 0.0}, {**base, "edit_strength": 0.0}])
    backbone = identify(ft)["backbone"]
    assert backbone[0] != backbone[1]  # edit_label alone rounds both to s=0.5
    assert backbone[2] == backbone[3]  # strength 0 is the unedited source, whatever the family


def test_risk_backbone_keys_are_the_backbone_role():
    from analysis.risk_backbone import protocol_keys, settable_keys as backbone_keys

    assert set(backbone_keys()) == {"source", "source_n", "source_weights", "source_params", "edit", "edit_strength",
                                    "edit_omega", "edit_params", "seed", "pretrain", "model"}
    assert {"target", "target_n", "target_params", "data_seed", "size", "channels", "psd_images", "n_folds", "fold",
            "finetune_seed", "threads", "model", "pretrain"} <= set(protocol_keys())


def _f4_trials(with_label: bool) -> pd.DataFrame:
    rows = []
    for source in ("natural", "medical"):
        for d in (0.0, 0.5):
            for fold in (0, 1):
                row = dict(trial_id=f"{source}{d}{fold}", kind="finetune", status="TERMINATED", source=source,
                           source_weights=None, seed=0, edit="none", edit_strength=0.0, target="ct_lesion",
                           artifact="band", artifact_omega=0.5, artifact_amplitude=0.1, degradation=d, fold=fold,
                           ood_auc=0.7, iid_auc=0.9, lr=1e-3 * (1 + fold % 1))
                if with_label:
                    row["source_label"] = source
                rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["config_columns"] = [c for c in df.columns if c not in ("trial_id", "kind", "status", "ood_auc", "iid_auc")]
    return df


def test_f4_strata_do_not_depend_on_a_reported_source_label():
    """An older experiment's table (no reported ``source_label``) must not stratify F4 by source:
    the strata are the conditions the backbones are compared within."""
    from analysis.findings import f4_strata_keys

    with_label, without = f4_strata_keys(_f4_trials(True)), f4_strata_keys(_f4_trials(False))
    assert with_label == without
    assert "source_label" not in without and "source" not in without
    assert {"target", "artifact", "degradation"} <= set(without)
