import tempfile
from pathlib import Path

import ray
from ray import tune

from spectral_ray.config import TrialConfig
from spectral_ray.experiment import run_finetune


def finetune(config: dict) -> None:
    """Fine-tune one grid point (source, edit, target, artifact, degradation, fold); reports
    per-epoch AUCs, then learning priorities, artifact signature, alignments and a checkpoint."""
    cfg = TrialConfig.model_validate(config)
    node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran it (Tune adds node_ip, hostname)
    with tempfile.TemporaryDirectory() as ckpt_dir:

        def report(metrics: dict) -> None:
            metrics = {**metrics, "node_id": node_id}
            if metrics.get("done"):
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
            else:
                tune.report(metrics)

        run_finetune(cfg, report, tensorboard_dir=tune.get_context().get_trial_dir(),
                     checkpoint_path=Path(ckpt_dir) / "model.pt")
