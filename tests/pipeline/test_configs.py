import pytest

from scarfx.pipeline.configs import ConfigError, PipelineConfig, config_from_dict, load_config


def test_demo_defaults_point_at_the_taxi_csv_inside_tfx():
    cfg = PipelineConfig().resolved()
    assert cfg.data.endswith("chicago_taxi_pipeline/data/big_tipper_label/data.csv")
    assert cfg.label == "big_tipper" and cfg.drop_columns == ["tips"]
    assert cfg.metadata_path.endswith("tfx_root/metadata.sqlite")


def test_yaml_overlay_and_unknown_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("label: y\nscarf:\n  corruption_rate: 0.3\ngate:\n  min_accuracy: 0.7\n")
    cfg = load_config(str(p))
    assert cfg.label == "y" and cfg.scarf.corruption_rate == 0.3 and cfg.gate.min_accuracy == 0.7
    assert cfg.scarf.temperature == 1.0  # untouched keys keep the paper default
    with pytest.raises(ConfigError, match="unknown config key 'lable'"):
        config_from_dict({"lable": "y"})
    with pytest.raises(ConfigError, match="scarf.tau"):
        config_from_dict({"scarf": {"tau": 1}})


@pytest.mark.parametrize(
    "values,message",
    [
        ({"data": "x.csv"}, "no label column"),
        ({"data": "x.csv", "label": "y", "scarf": {"corruption_rate": 1.0}}, "corruption_rate"),
        ({"data": "x.csv", "label": "y", "gate": {"min_accuracy": 2}}, "min_accuracy"),
        ({"data": "x.csv", "label": "y", "drop_columns": ["y"]}, "also listed"),
        ({"data": "x.csv", "label": "y", "scarf": {"finetune_corruption_rate": 1.0}}, "finetune_corruption_rate"),
        ({"data": "x.csv", "label": "y", "scarf": {"finetune_corrupted_rows": 0}}, "finetune_corrupted_rows"),
        ({"data": "x.csv", "label": "y", "scarf": {"finetune_corruption_source": "class"}},
         r"scarf\.finetune_corruption_source must be one of all_rows, same_class"),
        ({"data": "x.csv", "label": "y", "scarf": {"shuffle_buffer": 0}}, r"scarf\.shuffle_buffer must be >= 1"),
        ({"data": "x.csv", "label": "y", "scarf": {"validation_steps": 0}}, r"scarf\.validation_steps must be >= 1 or unset"),
        ({"data": "x.csv", "label": "y", "scarf": {"canonical_order_bytes": -1}}, r"scarf\.canonical_order_bytes must be >= 0"),
        ({"data": "x.csv", "label": "y", "scarf": {"pretrain_patience": 0}}, r"scarf\.pretrain_patience must be >= 1"),
        ({"data": "x.csv", "label": "y", "scarf": {"finetune_max_steps": 0}}, r"scarf\.finetune_max_steps must be >= 1"),
    ],
)
def test_invalid_settings(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values).resolved()


def test_bad_config_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.yaml"))


def test_label_fraction_bounds():
    with pytest.raises(ConfigError, match="label_fraction"):
        config_from_dict({"data": "x.csv", "label": "y", "label_fraction": 0}).resolved()
