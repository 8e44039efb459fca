"""The official releases table (adapt/releases.py): well-formed facts, each for a real
configuration, and shown by `adapt models`."""

import re
from urllib.parse import urlparse

from adaptsr.adapt.catalog import builtin_catalog, catalog_table
from adaptsr.adapt.models import BUILTIN_MODELS
from adaptsr.adapt.releases import RELEASES


def test_every_release_is_complete_and_fits_a_configuration():
    assert RELEASES
    for name, r in RELEASES.items():
        assert name == r.config and r.config in BUILTIN_MODELS
        assert re.fullmatch(r"[0-9a-f]{64}", r.sha256), name
        assert r.size > 0 and r.licence and r.source.startswith("https://")
        url = urlparse(r.url)
        assert url.scheme == "https" and url.path.rsplit("/", 1)[1] == r.file
        scale = int(r.config.rsplit("-x", 1)[1])
        assert f"_x{scale}." in r.file  # the weights' scale is the configuration's
    assert len({r.sha256 for r in RELEASES.values()}) == len(RELEASES)


def test_models_lists_each_release_with_its_facts():
    rows = builtin_catalog()
    table = catalog_table(rows)
    for r in RELEASES.values():
        assert r.url in table and r.sha256 in table and f"{r.size:,} bytes" in table
        assert r.licence in table
    by_name = {row.name: row for row in rows}
    assert by_name["swinir-m-x4"].release == RELEASES["swinir-m-x4"]
    assert by_name["edsr-x4"].release is None and by_name["edsr-x4"].weights == "random"
    assert by_name["adaptsr-safmn-x4"].weights == "pretrained"
