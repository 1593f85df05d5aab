from ray import tune

from spectral_ray.config import TrialConfig
from spectral_ray.experiment import run_robustness
from trainables.tuning import progress_first


def robustness(config: dict) -> None:
    """Search objective for one edit setting: mean O.O.D. AUC over the degradation grid."""
    run_robustness(TrialConfig.model_validate(config), lambda m: tune.report(progress_first(m)))
