"""TensorBoard output of a sweep: what a person reads, written once.

* Per trial (written by the trial, :class:`TrialWriter`): the learning priorities as images, each
  labelled with the priority it shows (on the shared probe set vs on the backbone's own source),
  and the probe-set priority over the fine-tuning epochs as a heat map.
* Per experiment (written by the driver, ``trainables/hparams.py``): the HParams view, built here
  from TensorBoard's own protos: the swept keys as hyper-parameters (a discrete domain where the
  grid lists values, an interval where a search samples a range, ``differs`` set where a key
  takes more than one value), the findings' metrics (:data:`HPARAM_METRICS`) as ``final/<key>``
  scalars, and a few per-epoch scalars (:data:`EPOCH_SCALARS`) as ``epoch/<key>``.

Imports no Ray; the protos need no TensorFlow.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from spectral_ray import plots

# Final metrics of the HParams table, with the name its column shows: the AUCs, the shortcut gap
# and the findings' priority metrics (docs/SCIENCE.md), for finetune and robustness trials.
HPARAM_METRICS = {
    "iid_auc": "I.I.D. AUC", "ood_auc": "O.O.D. AUC", "iid_ood_gap": "shortcut gap (I.I.D. − O.O.D. AUC)",
    "val_auc": "validation AUC",
    "shortcut_alignment_pretrained": "shortcut alignment, pretrained", "shortcut_alignment_probe": "shortcut alignment, probe set",
    "shortcut_alignment_finetuned": "shortcut alignment, fine-tuned",
    "alignment_probe": "alignment with artifact, probe set", "alignment_finetuned": "alignment with artifact, fine-tuned",
    "band_alignment_probe": "band alignment, probe set", "band_alignment_finetuned": "band alignment, fine-tuned",
    "centroid_probe": "priority centroid, probe set", "centroid_finetuned": "priority centroid, fine-tuned",
    "centroid_pretrained": "priority centroid, own source",
    "robustness": "robustness (mean O.O.D. AUC)", "iid_mean": "mean I.I.D. AUC", "objective": "search objective",
}
# Per-epoch scalars a person reads while a trial runs (step = Tune's training_iteration).
EPOCH_SCALARS = ("train_loss", "val_loss", "val_auc", "iid_auc", "ood_auc", "robustness", "iid_mean")
# The priority curves a trial reports, with what each one is measured on.
PRIORITY_LABELS = {
    "psd_probe": "pretrained backbone, on the probe set (psd_probe)",
    "psd_finetuned": "fine-tuned, on the probe set (psd_finetuned)",
    "psd_pretrained": "pretrained backbone, on its own source (psd_pretrained)",
    "psd_artifact": "artifact signature (psd_artifact)",
}


class TrialWriter:
    """Writes a trial's priority images into its folder (beside the driver's scalars)."""

    def __init__(self, logdir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), filename_suffix=".spectral")

    def final(self, final: dict, epoch_psds: list[np.ndarray]) -> None:
        """``final``: the trial's final report (``psd_*`` vectors, unit-sum over radial bins);
        ``epoch_psds``: the probe-set priority after each epoch (a cheap 32-image estimate)."""
        probe = {PRIORITY_LABELS[k]: final[k] for k in ("psd_probe", "psd_finetuned", "psd_artifact") if k in final}
        if probe:
            fig = plots.spectra_figure(probe, title="learning priority on the shared probe set", figsize=(5.5, 3.4))
            self.writer.add_image("priority/probe_set", plots.figure_rgb(fig), dataformats="HWC")
        if "psd_pretrained" in final:
            own = {PRIORITY_LABELS["psd_pretrained"]: final["psd_pretrained"]}
            fig = plots.spectra_figure(own, title="learning priority on the source it was pretrained on",
                                       figsize=(5.5, 3.4))
            self.writer.add_image("priority/own_source", plots.figure_rgb(fig), dataformats="HWC")
        if epoch_psds:
            heatmap = plots.figure_rgb(plots.heatmap_figure(epoch_psds, title="probe-set priority per fine-tuning epoch"))
            self.writer.add_image("priority/probe_set_over_epochs", heatmap, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------------- HParams protos


def _summary(tag: str, plugin_data):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    return summary


def hparam_value(value):
    """A config value as the HParams view stores it: bool, number or string (None → "none")."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return "none" if value is None else str(value)


def experiment_summary(domains: dict[str, list | tuple], metrics: list[str]):
    """The HParams experiment: one column per swept key and one per metric.

    ``domains``: {key: list of the values it takes (a discrete domain) or (lo, hi) (an interval)};
    a list mixing types is shown as strings. ``metrics``: keys of :data:`HPARAM_METRICS`, read
    from the ``final/<key>`` scalars."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    exp = api_pb2.Experiment(time_created_secs=time.time())
    for key, domain in domains.items():
        info = exp.hparam_infos.add(name=key)
        if isinstance(domain, tuple):
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.min_value, info.domain_interval.max_value = map(float, domain)
            info.differs = domain[1] > domain[0]
            continue
        values = discrete_values(domain)
        kind = type(values[0])
        info.type = {bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64}.get(kind, api_pb2.DATA_TYPE_STRING)
        info.domain_discrete.extend(values)
        info.differs = len(set(values)) > 1
    for key in metrics:
        exp.metric_infos.add(name=api_pb2.MetricName(tag=f"final/{key}"), display_name=HPARAM_METRICS.get(key, key))
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp))


def discrete_values(values: list) -> list:
    """The values of a discrete domain in one type (all strings when they mix types)."""
    converted = [hparam_value(v) for v in values]
    if len({type(v) for v in converted}) > 1:
        converted = [str(v) for v in values]
    return list(dict.fromkeys(converted))


def session_start_summary(values: dict, group: str, domains: dict[str, list | tuple]):
    """One trial's session: its value of each swept key (typed as :func:`experiment_summary`
    typed the key's domain)."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
    for key, value in values.items():
        domain = domains.get(key)
        v = hparam_value(value)
        if isinstance(domain, list) and len({type(x) for x in map(hparam_value, domain)}) > 1:
            v = str(value)
        if isinstance(v, bool):
            info.hparams[key].bool_value = v
        elif isinstance(v, float):
            info.hparams[key].number_value = v
        else:
            info.hparams[key].string_value = v
    return _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end_summary(failed: bool):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))
