"""The streamed table (the Trainer's TFRecords as tf.data) against the in-memory one."""
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from scarfx.models.labels import hide_labels_in_stream
from scarfx.models.network import build_encoder
from scarfx.models.finetuning import fine_tune
from scarfx.models.pretraining import pretrain
from scarfx.models.scarf import train_scarf_classifier
from scarfx.models.row_order import in_canonical_order
from scarfx.models.scarf_config import ScarfConfig
from scarfx.models.sources import InMemoryTable, StreamedTable
from scarfx.models.tabular_data import FeatureLayout, TabularData

LAYOUT = FeatureLayout(("a", "b"), ("c",), (4,))
TINY = ScarfConfig(encoder_depth=1, encoder_width=16, head_depth=1, head_width=16, batch_size=32, pretrain_epochs=1,
                   finetune_epochs=1, min_steps_per_epoch=1, ensemble_size=2, feature_bank_size=50)


def _table(n, seed=0, labelled=0.5):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 2)).astype(np.float32)
    labels = (numeric[:, 0] > 0).astype(np.int64)
    labels[rng.random(n) > labelled] = -1
    return TabularData(numeric, rng.integers(0, 4, size=(n, 1)).astype(np.int64), labels)


def _stream(data, batch=37):
    return StreamedTable(lambda: tf.data.Dataset.from_tensor_slices(
        {"numeric": data.numeric, "categorical": data.categorical, "labels": data.labels}).batch(batch))


def _rows(ds):
    return list(ds.as_numpy_iterator())


def test_stream_survey_fills_the_same_bank_as_the_arrays():
    data = _table(500)
    streamed = _stream(data).survey(LAYOUT, 2, TINY, with_bank=True)
    in_memory = InMemoryTable(data).survey(LAYOUT, 2, TINY, with_bank=True)
    assert streamed.rows == in_memory.rows == 500 and streamed.labelled == in_memory.labelled
    np.testing.assert_array_equal(streamed.bank.numeric, in_memory.bank.numeric)  # same reservoir, same rows
    np.testing.assert_array_equal(streamed.bank.categorical, in_memory.bank.categorical)
    assert streamed.bank.rows_seen == 500 and len(streamed.bank) == 50


KEPT, STREAMED = TINY.labelled_memory_bytes, 0  # labelled rows kept in memory by the survey, or streamed


@pytest.mark.parametrize("labelled_memory_bytes", [KEPT, STREAMED])
def test_stream_splits_are_disjoint_complete_and_the_same_on_every_pass(labelled_memory_bytes):
    data = _table(600)
    source = _stream(data)
    survey = source.survey(LAYOUT, 2, dataclasses.replace(TINY, labelled_memory_bytes=labelled_memory_bytes),
                           with_bank=False)
    assert survey.labelled_in_memory == (labelled_memory_bytes == KEPT)
    train, val = _rows(source.pretrain_rows(False)), _rows(source.pretrain_rows(True))
    assert (len(train), len(val)) == survey.pretrain_split and len(train) + len(val) == 600
    assert 30 <= len(val) <= 90  # validation_fraction 0.1 of 600, by hash
    keys = lambda rows: sorted(r["numeric"].tobytes() for r in rows)  # noqa: E731
    assert keys(train + val) == keys([{"numeric": x} for x in data.numeric])
    assert keys(_rows(source.pretrain_rows(True))) == keys(val)  # a second pass: the same rows
    folds = [_rows(source.labelled_rows(k, True)) for k in range(2)]
    assert [len(f) for f in folds] == [v for _, v in survey.finetune_splits]
    assert sum(len(f) for f in folds) == survey.labelled == int((data.labels >= 0).sum())
    for k, fold in enumerate(folds):
        trained = _rows(source.labelled_rows(k, False))
        assert len(trained) == survey.finetune_splits[k][0] == survey.labelled - len(fold)
        assert not set(keys([r for r, _ in trained])) & set(keys([r for r, _ in fold]))


@pytest.mark.parametrize("labelled_memory_bytes", [KEPT, STREAMED])
def test_validation_samples_are_bounded(labelled_memory_bytes):
    data = _table(600)
    config = dataclasses.replace(TINY, max_validation_rows=7, labelled_memory_bytes=labelled_memory_bytes)
    source = _stream(data)
    survey = source.survey(LAYOUT, 2, config, with_bank=False)
    assert survey.pretrain_split[1] == 7 and len(_rows(source.pretrain_rows(True))) == 7
    assert all(v == 7 for _, v in survey.finetune_splits)
    assert all(len(_rows(source.labelled_rows(k, True))) == 7 for k in range(2))
    assert InMemoryTable(data).survey(LAYOUT, 2, config, with_bank=False).pretrain_split[1] == 7


def test_labelled_rows_are_kept_in_memory_only_within_their_bound():
    """At the bound the survey keeps the labelled rows and fine-tuning never re-reads the
    stream; a byte under it nothing is kept and fine-tuning streams. Both read the same
    rows in the same order, so they fit the same classifier."""
    data = _table(600, labelled=0.6)
    labelled = int((data.labels >= 0).sum())
    row_bytes = 2 * 4 + 1 * 8 + 8 + 8  # numeric, categorical, label, split hash
    config = dataclasses.replace(TINY, finetune_epochs=4, min_steps_per_epoch=10, patience=4)
    predictions = {}
    for bound in (labelled * row_bytes, labelled * row_bytes - 1):
        reads = []
        source = StreamedTable(lambda: reads.append(1) or _stream(data).make_batches())
        bounded = dataclasses.replace(config, labelled_memory_bytes=bound)
        survey = source.survey(LAYOUT, 2, bounded, with_bank=True)
        kept = bound == labelled * row_bytes
        assert survey.labelled_in_memory == kept and (source.labelled is not None) == kept
        if kept:
            assert sum(v.numpy().nbytes for v in source.labelled.values()) == bound
        reads.clear()
        tf.keras.utils.set_random_seed(0)
        classifier, _, summary = fine_tune(build_encoder(LAYOUT, bounded), source, LAYOUT, 2, bounded, survey=survey)
        assert bool(reads) != kept  # in memory: not one pass over the stream after the survey
        predictions[kept] = classifier.predict(data.inputs(), verbose=0)
    rows = data.labels >= 0
    accuracy = (predictions[True].argmax(axis=1) == data.labels)[rows].mean()
    assert accuracy > 0.75, accuracy  # the label is one feature's sign: chance is 0.5
    np.testing.assert_allclose(predictions[True], predictions[False], rtol=1e-5, atol=1e-6)


def test_steps_per_epoch_and_validation_steps_are_honoured():
    data = _table(400)
    config = dataclasses.replace(TINY, steps_per_epoch=3, validation_steps=1, pretrain_epochs=2, finetune_epochs=2,
                                 patience=5)
    result = train_scarf_classifier(_stream(data), LAYOUT, 2, config)
    assert result.summary["pretrain_steps_per_epoch"] == 3 and result.summary["finetune_steps_per_epoch"] == 3
    assert result.summary["pretrain_epochs_run"] == 2
    one_pass = pretrain(build_encoder(LAYOUT, TINY), _stream(data), LAYOUT, TINY)[1]
    assert one_pass["pretrain_steps_per_epoch"] == one_pass["pretrain_train_rows"] // 32


def test_stream_rejects_bad_rows_batch_by_batch():
    data = _table(100)
    data.categorical[90, 0] = 9  # beyond cardinality 4, in the third batch
    with pytest.raises(ValueError, match="ids outside"):
        _stream(data).survey(LAYOUT, 2, TINY, with_bank=True)
    unlabelled = TabularData(data.numeric, np.zeros_like(data.categorical), np.full(100, -1))
    with pytest.raises(ValueError, match="no labelled rows"):
        _stream(unlabelled).survey(LAYOUT, 2, TINY, with_bank=True)


def test_hiding_labels_in_a_stream_keeps_a_stratified_share_and_every_class():
    labels = np.array(([0] * 9 + [1]) * 100 + [2] * 10 + [-1] * 50)
    batches = tf.data.Dataset.from_tensor_slices({"labels": labels}).batch(64)
    out = np.concatenate([b["labels"] for b in hide_labels_in_stream(batches, 0.25, 3, seed=0).as_numpy_iterator()])
    kept = [(out == c).sum() for c in (0, 1, 2)]
    assert abs(kept[0] - 225) <= 1 and abs(kept[1] - 25) <= 1 and kept[2] in (2, 3)
    assert np.all(out[labels == -1] == -1) and np.all((out == labels) | (out == -1))
    assert out[np.flatnonzero(labels == 2)[0]] == 2  # a class's first row always keeps its label
    again = np.concatenate([b["labels"] for b in hide_labels_in_stream(batches, 0.25, 3, 0).as_numpy_iterator()])
    np.testing.assert_array_equal(out, again)


def _permuted_stream(data, order, canonical_order_bytes, label_fraction=0.5, spill_dir=None):
    """The Trainer's stream (models/trainer.py ordered_stream) over `data`'s rows in `order`."""
    from scarfx.models.trainer import ordered_stream

    return ordered_stream(lambda: tf.data.Dataset.from_tensor_slices(
        {"numeric": data.numeric[order], "categorical": data.categorical[order], "labels": data.labels[order]}).batch(37),
        LAYOUT, 2, label_fraction, seed=0, canonical_order_bytes=canonical_order_bytes, spill_dir=spill_dir)


def _columns(stream) -> dict:
    """Every row of one pass of a StreamedTable, by field."""
    batches = list(stream.make_batches().as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in ("numeric", "categorical", "labels")}


def test_canonical_order_does_not_depend_on_the_order_rows_arrive_in():
    data = _table(300, labelled=1.0)
    data.numeric[5] = data.numeric[6]  # equal features, different labels: still one order
    data.labels[5], data.labels[6] = 0, 1
    orders = [np.arange(300), np.random.default_rng(1).permutation(300)]
    out = [_rows(in_canonical_order(tf.data.Dataset.from_tensor_slices(
        {"numeric": data.numeric[o], "categorical": data.categorical[o], "labels": data.labels[o]}).batch(37), 1000, 50))
        for o in orders]
    assert [len(b["labels"]) for b in out[0]] == [50] * 6  # rebatched to the read batch
    for key in ("numeric", "categorical", "labels"):
        np.testing.assert_array_equal(np.concatenate([b[key] for b in out[0]]), np.concatenate([b[key] for b in out[1]]))
    np.testing.assert_array_equal(np.sort(np.concatenate([b["labels"] for b in out[0]])), np.sort(data.labels))
    # A window smaller than the table orders each window only: the same rows, in windows.
    windowed = np.concatenate([b["labels"] for b in _rows(in_canonical_order(
        tf.data.Dataset.from_tensor_slices({"numeric": data.numeric, "categorical": data.categorical,
                                            "labels": data.labels}).batch(37), 100, 50))])
    np.testing.assert_array_equal(np.sort(windowed[:100]), np.sort(data.labels[:100]))


def test_the_same_rows_in_another_order_train_the_same_model():
    """ExampleGen writes a span's rows in a different order per run; the Trainer must not care."""
    data = _table(240, labelled=1.0)
    orders = [np.arange(240), np.random.default_rng(3).permutation(240)]
    config = dataclasses.replace(TINY, pretrain_epochs=2, finetune_epochs=2, validation_fraction=0.2)
    test_inputs = _table(50, seed=9).inputs()

    def trained(order, canonical_order_bytes):
        result = train_scarf_classifier(_permuted_stream(data, order, canonical_order_bytes), LAYOUT, 2, config)
        summary = {k: result.summary[k] for k in ("finetune_labelled_rows", "pretrain_train_rows", "finetune_train_rows",
                                                  "pretrain_best_val_info_nce", "finetune_best_val_loss")}
        return summary, result.classifier.predict(test_inputs, verbose=0)

    (first_summary, first), (second_summary, second) = (trained(o, config.canonical_order_bytes) for o in orders)
    assert first_summary == second_summary
    np.testing.assert_array_equal(first, second)
    # What the canonical order buys: `first` is what the canonical order itself trains when
    # fed as it is; the permuted order fed as it is (no reordering) hides other labels,
    # splits other rows and shuffles differently, so it trains another model.
    assert not np.array_equal(trained(orders[1], 0)[1], first)


def test_a_table_longer_than_a_window_is_spilled_and_read_back_in_the_one_global_order(tmp_path):
    from scarfx.models.row_order import ORDER_BUCKETS, canonical_window_rows

    data = _table(3000, labelled=1.0)
    window_bytes = 500 * (4 * len(LAYOUT.numeric_names) + 8 * len(LAYOUT.categorical_names) + 8)
    assert canonical_window_rows(LAYOUT, window_bytes) == 500  # the table is 6 windows long
    orders = [np.arange(3000), np.random.default_rng(4).permutation(3000), np.arange(3000)[::-1]]
    spilled = []
    for i, order in enumerate(orders):
        spill = tmp_path / f"spill{i}"
        spill.mkdir()
        stream = _permuted_stream(data, order, window_bytes, label_fraction=1.0)  # no spill dir: windows only
        spilled_stream = _permuted_stream(data, order, window_bytes, label_fraction=1.0, spill_dir=str(spill))
        files = sorted(os.listdir(spill))
        assert 1 < len(files) <= ORDER_BUCKETS  # spilled once, when the stream was built
        spilled.append(_columns(spilled_stream))
        np.testing.assert_array_equal(spilled[-1]["labels"], _columns(spilled_stream)["labels"])  # every pass alike
        if i == 0:
            windowed = _columns(stream)
    for key in ("numeric", "categorical", "labels"):
        for other in spilled[1:]:
            np.testing.assert_array_equal(spilled[0][key], other[key])  # whatever order the rows came in
    # The global order is the one an in-memory sort of the whole table gives.
    whole = _columns(_permuted_stream(data, orders[1], 10 * window_bytes, label_fraction=1.0))
    for key in ("numeric", "categorical", "labels"):
        np.testing.assert_array_equal(spilled[0][key], whole[key])
    # Sorted within windows only (no spill dir), the order still follows the input order.
    assert not np.array_equal(windowed["labels"], spilled[0]["labels"])


def test_a_table_within_one_window_is_not_spilled(tmp_path):
    data = _table(300, labelled=1.0)
    _columns(_permuted_stream(data, np.arange(300), 64 * 2**20, label_fraction=1.0, spill_dir=str(tmp_path)))
    assert os.listdir(tmp_path) == []
