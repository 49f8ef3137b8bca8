"""SCARF hyperparameters, in a module free of TensorFlow so config files load fast."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class ScarfConfig:
    """Hyperparameters; defaults are the paper's (early stopping caps the epochs)."""

    corruption_rate: float = 0.6
    temperature: float = 1.0
    encoder_depth: int = 4
    encoder_width: int = 256
    head_depth: int = 2
    head_width: int = 256
    batch_size: int = 128
    learning_rate: float = 1e-3
    pretrain_epochs: int = 30  # maximum; early stopping usually ends sooner
    finetune_epochs: int = 50  # maximum
    patience: int = 3
    validation_fraction: float = 0.1
    # An epoch is at least this many steps: on a 300-row table a pass is 2 steps, and
    # patience counted in such epochs would stop training after a handful of updates.
    min_steps_per_epoch: int = 20
    feature_bank_size: int = 50_000
    pretrain: bool = True  # False: the same network trained from scratch (baseline)
    symmetric_loss: bool = False
    seed: int = 0
