"""SCARF hyperparameters, in a module free of TensorFlow so config files load fast."""
import dataclasses

FINETUNE_MONITORS = ("loss", "accuracy")
# tf.distribute strategy the Trainer builds its models under (models/distribution.py):
# none; all local GPUs (or the CPU) with MirroredStrategy; or the workers of TF_CONFIG
# with MultiWorkerMirroredStrategy, as on Vertex AI Training or a Kubeflow TFJob.
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
NUMERIC_ENCODINGS = ("quantile_normal", "zscore")  # Transform's numeric encodings (models/preprocessing.py)
# Where fine-tuning augmentation redraws values from (models/corruption.py augment_with_corruption).
CORRUPTION_SOURCES = ("all_rows", "same_class")
CALIBRATIONS = ("temperature", "none")  # of the fine-tuned ensemble (models/calibration.py)


@dataclasses.dataclass(frozen=True)
class ScarfConfig:
    """Hyperparameters. The method's are the paper's (c, τ, 4x256 encoder, 2-layer head,
    Adam 1e-3, batch 128, patience 3); the rest (encodings, regularisation, ensembling)
    are ours, with defaults measured by benchmarks/quality.py (docs/BENCHMARKS.md)."""

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
    # Pretraining's own patience (None = `patience`). 10 instead of 3 was measured: mean AUC
    # -0.0016 over the 20 tables (SwissLabor +0.022, ResumeNames -0.056; docs/BENCHMARKS.md).
    pretrain_patience: int | None = None
    validation_fraction: float = 0.1
    # An epoch is at least this many steps: on a 300-row table a pass is 2 steps, and
    # patience counted in such epochs would stop training after a handful of updates.
    min_steps_per_epoch: int = 20
    feature_bank_size: int = 50_000
    pretrain: bool = True  # False: the same network trained from scratch (baseline)
    symmetric_loss: bool = False
    seed: int = 0
    # --- how the network reads numeric features (models/numeric_encoding.py)
    numeric_bins: int = 0  # piecewise-linear encoding components per feature; 0 = the value itself
    missing_indicators: bool = True  # one 0/1 input per numeric feature: was the cell missing
    # --- fine-tuning
    dropout: float = 0.0  # after every encoder layer, in both stages
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay while fine-tuning
    # Early stopping (and the best epoch kept) on validation log-loss, or on accuracy
    # with the loss breaking ties. Accuracy picks the all-majority epoch on imbalanced
    # tables; the loss does not.
    finetune_monitor: str = "loss"
    # Fine-tuning epochs of at least this many steps (None = min_steps_per_epoch). On a
    # few hundred labelled rows, 20 steps are 10 passes: the best model can lie inside
    # the first such epoch, out of early stopping's reach. Smaller epochs are validated
    # more often, with patience and the epoch cap scaled to the same number of steps.
    finetune_min_steps_per_epoch: int | None = None
    # A fine-tuning epoch improves only if the monitored value gains more than this.
    finetune_min_delta: float = 0.001
    # Fine-tuning augmentation with SCARF's corruption (0 = off): this share of each
    # training batch's rows gets ⌊c·M⌋ features redrawn from their marginals, label kept.
    # Measured default: c = 0.6 (the pretraining rate) on half the rows (docs/BENCHMARKS.md).
    finetune_corruption_rate: float = 0.6
    finetune_corrupted_rows: float = 0.5
    # Where the augmentation's redrawn values come from: "same_class", the member's labelled
    # training rows of the row's own class, so the kept label stays true of the new row; or
    # "all_rows", the pretraining bank (every row, labelled or not). Measured over 20 tables
    # x 3 seeds (docs/BENCHMARKS.md, eighth round): AUC +0.0026 at 25% labels (13 tables
    # better, 7 worse), +0.0014 at 100%, -0.0013 at 10%; accuracy up at all three; log-loss
    # worse with few labels (+0.048 at 10%: a class of a handful of rows makes near-copies).
    finetune_corruption_source: str = "same_class"
    # "temperature": the ensemble's members are rescaled by one temperature T >= 1 fitted on
    # their out-of-fold predictions (models/calibration.py), for calibrated probabilities;
    # "none". Measured (seed 0, docs/BENCHMARKS.md, ninth round): log-loss -0.052 at 10%
    # labels (ad_data 1.01 -> 0.52, College 0.47 -> 0.26), -0.011 at 25%; AUC +0.0008 and
    # +0.0005, accuracy unchanged (a scalar T keeps each member's argmax).
    calibration: str = "temperature"
    # Wide-and-deep classifier: a linear map of the encoder's input layer added to the logits.
    linear_skip: bool = False
    # LP-FT: fit the new softmax layer on the frozen encoder before fine-tuning it all.
    linear_probe: bool = False
    # Fine-tuning (after any linear probe) runs at learning_rate times this.
    finetune_learning_rate_multiplier: float = 1.0
    # Discriminative fine-tuning: a pretrained encoder's weights learn at this multiple of
    # the fine-tuning rate while the new softmax layer learns at the full rate, so fitting
    # the head does not wash out what pretraining learned. Applies only when the encoder
    # was pretrained: the no-pretraining baseline has nothing to keep.
    finetune_encoder_learning_rate_multiplier: float = 1.0
    # K > 1: K members fine-tuned from the same pretrained encoder, member k validated
    # on stratified fold k of the labelled rows and trained on the others; the exported
    # model averages their probabilities. K = 1: one member, `validation_fraction` held out.
    ensemble_size: int = 5
    # Label-scarce self-training: after fine-tuning, refit the members this many times on
    # their rows plus the unlabelled rows the ensemble predicts with at least this
    # probability (labelled with that prediction). 0 = off.
    self_training_rounds: int = 0
    pseudo_label_threshold: float = 0.9
    # --- scale (a streamed table: the Trainer's TFRecords; models/scarf.py StreamedTable)
    # A streamed table's rows are put in a canonical order (sorted by a fingerprint of each
    # row's values) before anything reads them, so the same rows train the same model
    # whatever order Beam wrote them in, and a CSV sorted by date is not read by date:
    # splits, label hiding, the bank and the shuffle all follow stream order. A table of at
    # most this many bytes (64 MiB: ~880k rows of 15 features) is sorted in memory on each
    # pass; a longer one is spilled once to the Trainer's temp dir by fingerprint range and
    # read back one sorted range at a time: the same order (models/row_order.py). 0 = off.
    canonical_order_bytes: int = 64 * 2**20
    # Rows in the shuffle buffer of a streamed table (an in-memory one is shuffled whole).
    shuffle_buffer: int = 100_000
    # At most this many rows validate each stage: the fixed pretraining pairs, each fold.
    max_validation_rows: int = 50_000
    # A streamed table's labelled rows (features, label and split hash: 4·Dn + 8·Dc + 16
    # bytes a row) are kept in memory by its survey pass when they take at most this many
    # bytes, and fine-tuning's K members then slice them instead of re-reading the stream
    # twice an epoch each (3x slower on the taxi demo). Past the bound nothing is kept and
    # fine-tuning streams. 0 = always stream. 256 MiB: ~2M rows of 15 features. Peak
    # use is about twice the kept rows: once more while one member's rows are sliced out.
    labelled_memory_bytes: int = 256 * 2**20
    # An epoch of exactly this many steps, and validation on this many batches (the
    # Trainer sets them from TrainArgs/EvalArgs num_steps when given). None: one pass.
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    # Step budgets: at most this many optimizer steps pretrain, and fine-tune (shared by the
    # ensemble's members, each getting an equal part; None = no budget). They bind past
    # ~85k pretraining rows and ~25k labelled rows (a pass x the epoch cap > the budget),
    # so the 20 benchmark tables and the 15k-row demo train exactly as without them. On a
    # large table the epochs of a pass would otherwise grow with the rows *and* run longer
    # (the validation loss keeps falling), making the Trainer superlinear in rows (150k
    # rows: 30 pretraining epochs, fine-tuning best epochs 21-30). When a budget binds, the
    # epoch cap is lowered to fit it; a pass longer than a tenth of the budget is cut, so
    # early stopping still gets 10 checks (models/training.py: within_step_budget).
    pretrain_max_steps: int | None = 20_000
    finetune_max_steps: int | None = 40_000
    # The global batch (batch_size) is split across the strategy's replicas.
    distribution: str = "none"


def setting_errors(config: ScarfConfig) -> list[str]:
    """What is wrong with the settings the model cannot run with: a named choice that is not
    one of its choices, and the counts that must be positive. The one check behind both the
    pipeline's config check (which prefixes `scarf.`) and `train_scarf_classifier`'s."""
    choices = {"finetune_monitor": FINETUNE_MONITORS, "calibration": CALIBRATIONS,
               "finetune_corruption_source": CORRUPTION_SOURCES, "distribution": DISTRIBUTIONS}
    errors = [f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}"
              for key, allowed in choices.items() if getattr(config, key) not in allowed]
    if not 0.0 <= config.dropout < 1.0:
        errors.append(f"dropout must lie in [0, 1), got {config.dropout}")
    errors += [f"{key} must be >= 1, got {getattr(config, key)}"
               for key in ("ensemble_size", "shuffle_buffer", "max_validation_rows") if getattr(config, key) < 1]
    errors += [f"{key} must be >= 1 or unset, got {getattr(config, key)}"
               for key in ("steps_per_epoch", "validation_steps", "pretrain_patience", "pretrain_max_steps",
                           "finetune_max_steps")
               if getattr(config, key) is not None and getattr(config, key) < 1]
    errors += [f"{key} must be >= 0, got {getattr(config, key)}"
               for key in ("labelled_memory_bytes", "canonical_order_bytes") if getattr(config, key) < 0]
    return errors
