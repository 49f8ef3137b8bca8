"""run_fn's glue: the ScarfConfig a Trainer run trains with."""
from tfx import v1 as tfx

from scarfx.models.trainer import scarf_config


def test_train_and_eval_steps_set_the_epoch_lengths_when_given():
    custom = {"scarf": {"batch_size": 64}}
    given = scarf_config(custom, tfx.components.FnArgs(train_steps=300, eval_steps=20))
    assert (given.batch_size, given.steps_per_epoch, given.validation_steps) == (64, 300, 20)
    unset = scarf_config(custom, tfx.components.FnArgs(train_steps=None, eval_steps=None))
    assert (unset.steps_per_epoch, unset.validation_steps) == (None, None)
