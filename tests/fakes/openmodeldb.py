"""OpenModelDB's rules for a model file (src/lib/model-props.ts in
OpenModelDB/open-model-database), written out to check the model cards adaptsr writes."""

import re

# required keys and their kinds
REQUIRED = {
    "name": str,
    "tags": list,
    "description": str,
    "date": str,
    "architecture": str,
    "scale": int,
    "inputChannels": int,
    "outputChannels": int,
    "resources": list,
    "images": list,
}
OPTIONAL_INTS = ("trainingIterations", "trainingBatchSize", "trainingHRSize")
RESOURCE_KINDS = {("pytorch", "pth"), ("pytorch", "safetensors"), ("onnx", "onnx")}
ARCH_ID = re.compile(r"^[a-z0-9+]+(?:-[a-z0-9]+)*$")


def check_openmodeldb_shape(card: dict) -> None:
    """Fail on anything OpenModelDB's validator refuses (the author and tags are the
    author's to add: the card leaves them out or empty)."""
    for key, kind in REQUIRED.items():
        assert isinstance(card[key], kind), key
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", card["date"])
    assert card["description"] == card["description"].strip() and card["description"]
    assert ARCH_ID.match(card["architecture"])
    assert 1 <= card["scale"] <= 16
    assert 1 <= card["inputChannels"] <= 4 and 1 <= card["outputChannels"] <= 4
    assert card["resources"]
    for r in card["resources"]:
        assert (r["platform"], r["type"]) in RESOURCE_KINDS
        assert type(r["size"]) is int and r["size"] >= 1
        assert re.fullmatch(r"[0-9a-f]{64}", r["sha256"])
        assert r["urls"] == []
    for key in OPTIONAL_INTS:
        if key in card:
            assert type(card[key]) is int and card[key] >= 1, key
    if "size" in card:
        assert card["size"] and all(isinstance(s, str) and s for s in card["size"])
    for key in ("license", "dataset", "pretrainedModelG"):
        assert key not in card or isinstance(card[key], str), key
    assert None not in card.values()
