"""The spec document: round trips, and refusal with a useful message of anything malformed."""

from __future__ import annotations

import json
import math

import pytest

from edgeinfer import SCHEMA, Decode, InputSpec, OutputSpec, SchemaVersionError, Spec, SpecError, Step


def _spec(**over) -> Spec:
    base = dict(
        steps=(Step("resize", {"rule": "shorter", "size": 256, "interpolation": "bilinear"}),
               Step("center_crop", {"size": [224, 224]}),
               Step("to_float", {"scale": "div255"}),
               Step("normalize", {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})),
        input=InputSpec("input", (None, 3, 224, 224)),
        output=OutputSpec("logits", "logits"),
        labels=("cat", "dog"),
        provenance={"torch": "2.14.1"},
    )
    base.update(over)
    return Spec(**base).validate()


def test_spec_round_trips_through_json():
    spec = _spec()
    again = Spec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(again.to_json())["schema"] == SCHEMA


def test_unknown_schema_version_is_refused_naming_both_versions():
    data = _spec().to_dict()
    data["schema"] = "edgeinfer.spec/99"
    with pytest.raises(SchemaVersionError, match=r"edgeinfer\.spec/1.*edgeinfer\.spec/99|edgeinfer\.spec/99.*edgeinfer\.spec/1"):
        Spec.from_dict(data)


def test_unknown_op_is_refused_listing_known_ops():
    data = _spec().to_dict()
    data["steps"][0] = {"op": "sharpen", "amount": 2}
    with pytest.raises(SpecError, match="sharpen.*known ops.*center_crop"):
        Spec.from_dict(data)


def test_unsupported_interpolation_names_step_and_choices():
    data = _spec().to_dict()
    data["steps"][0]["interpolation"] = "lanczos5"
    with pytest.raises(SpecError, match=r"step 0 'resize'.*lanczos5.*bilinear"):
        Spec.from_dict(data)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["steps"][3].update(std=[0.2, 0.0, 0.2]), "non-zero"),
    (lambda d: d["steps"][3].update(std=[0.2, math.nan, 0.2]), "finite"),
    (lambda d: d["steps"][0].update(size=-3), "size"),
    (lambda d: d["steps"][0].update(size=10**9), "size"),
    (lambda d: d["steps"][1].update(size="big"), "size"),
    (lambda d: d.update(extra=1), "unknown key"),
    (lambda d: d["input"].update(shape=[None, 5, 224, 224]), "channels"),
    (lambda d: d["output"].update(kind="softmax"), "logits"),
    (lambda d: d["decode"].update(color="cmyk"), "decode.color"),
    (lambda d: d.update(steps=[]), "steps"),
    (lambda d: d["steps"].pop(2), "to_float"),
    (lambda d: d.update(labels=["x" * 5000]), "labels"),
])
def test_malformed_specs_raise_spec_error_saying_what(mutate, fragment):
    data = json.loads(_spec().to_json())
    mutate(data)
    with pytest.raises(SpecError, match=fragment):
        Spec.from_dict(data)


def test_pil_resize_after_float_conversion_is_refused():
    with pytest.raises(SpecError, match="PIL resizes 8-bit"):
        _spec(steps=(Step("to_float", {"scale": "div255"}),
                     Step("resize", {"rule": "exact", "size": [224, 224], "interpolation": "bilinear"})))


def test_describe_reads_like_the_training_code():
    text = _spec().describe()
    assert "Resize(size=256 (shorter)" in text and "CenterCrop(size=[224, 224]" in text
    assert "Normalize(mean=[0.485, 0.456, 0.406]" in text


def test_invalid_json_is_a_spec_error():
    with pytest.raises(SpecError, match="valid JSON"):
        Spec.from_json("{not json")


def test_decode_defaults_follow_the_pil_loader():
    assert Decode() == Decode(color="rgb", exif_orientation=False, alpha="drop")

