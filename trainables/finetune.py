import tempfile
from pathlib import Path

import ray
from ray import tune

from spectral_ray.config import TrialConfig
from spectral_ray.experiment import run_finetune
from trainables.tuning import progress_first


def finetune(config: dict, checkpoint: str = "head") -> None:
    """Fine-tune one grid point (source, edit, target, artifact, degradation, fold); reports
    per-epoch AUCs, then learning priorities, artifact signature, alignments and, unless
    ``checkpoint`` is ``none``, a checkpoint (``head``: the classifier; ``full``: the network)."""
    cfg = TrialConfig.model_validate(config)
    node_id = ray.get_runtime_context().get_node_id()  # which Ray node ran it (Tune adds node_ip, hostname)
    with tempfile.TemporaryDirectory() as ckpt_dir:

        def report(metrics: dict) -> None:
            metrics = progress_first({**metrics, "node_id": node_id})
            if metrics.get("done") and checkpoint != "none":
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
            else:
                tune.report(metrics)

        # TensorBoard files go to the working directory, which Ray makes the trial's own (fresh or
        # reused worker) and syncs to the trial folder in storage from any node
        run_finetune(cfg, report, tensorboard_dir=Path.cwd(),
                     checkpoint_path=None if checkpoint == "none" else Path(ckpt_dir) / f"{checkpoint}.pt",
                     checkpoint=checkpoint)
