"""Ray Tune glue: thin function trainables over :mod:`spectral_ray.experiment`, and the launcher
that turns a sweep file into a ``tune.Tuner``."""

TRAINABLES = ("pretrain", "finetune", "robustness")


def get_trainable(name: str):
    """The function trainable called ``name`` (imports Ray)."""
    if name == "pretrain":
        from trainables.pretrain import pretrain as fn
    elif name == "finetune":
        from trainables.finetune import finetune as fn
    elif name == "robustness":
        from trainables.robustness import robustness as fn
    else:
        raise ValueError(f"unknown trainable {name!r}; choose one of {', '.join(TRAINABLES)}")
    return fn
