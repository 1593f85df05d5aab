from ray import tune

from spectral_ray.config import TrialConfig
from spectral_ray.experiment import run_pretrain


def pretrain(config: dict) -> None:
    """Pretrain a backbone through the store (once per distinct pretraining config); reports
    per-epoch loss/accuracy and the pretrained learning priority."""
    run_pretrain(TrialConfig.model_validate(config), tune.report)
