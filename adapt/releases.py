"""The official weights of the built-in configurations: where each is published, its size,
sha256 and licence. Facts only, read from OpenModelDB's public metadata (data/models/*.json in
OpenModelDB/open-model-database) and the authors' release pages; `adapt fetch NAME` downloads
one and checks it against these.

A configuration is listed only where both size and sha256 were confirmed from a published
source; the others (EDSR, SAFMN, DRCT) have no entry yet and stay random until one is added.
"""

from __future__ import annotations

from dataclasses import dataclass

_SWINIR = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
_OPENMODELDB = "https://github.com/OpenModelDB/open-model-database/blob/main/data/models/"


@dataclass(frozen=True)
class Release:
    config: str  # the BUILTIN_MODELS name whose hyper-parameters the weights fit
    file: str
    url: str
    size: int  # bytes
    sha256: str
    licence: str  # SPDX identifier
    source: str  # where these facts were read


def _swinir(config: str, file: str, size: int, sha256: str, record: str) -> Release:
    return Release(
        config, file, _SWINIR + file, size, sha256, "Apache-2.0", _OPENMODELDB + record + ".json"
    )


RELEASES: dict[str, Release] = {
    r.config: r
    for r in (
        _swinir(
            "swinir-light-x2",
            "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth",
            17147989,
            "193b229909ca89cd8b55de9c9e7fce146ae759d59dfcd78d8feb9dd1d6fa0fd7",
            "2x-lightweightSR-DIV2K-s64w8-SwinIR-S",
        ),
        _swinir(
            "swinir-light-x4",
            "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth",
            17225941,
            "09fad24e32ae62722e1a055efde9921328f4137981bab0a42a4a3a806306c58e",
            "4x-lightweightSR-DIV2K-s64w8-SwinIR-S",
        ),
        # swinir-m-x2 is the 64x64-patch configuration: the DF2K s64w8 release
        _swinir(
            "swinir-m-x2",
            "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth",
            67277475,
            "2032ebf8f401dd3ce2fae5f3852117cb72101ec6ed8358faa64c2a3fa09ed4ac",
            "2x-classicalSR-DF2K-s64w8-SwinIR-M",
        ),
        # swinir-m-x4 is the 48x48-patch configuration: the DIV2K s48w8 release
        _swinir(
            "swinir-m-x4",
            "001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth",
            59611499,
            "129dc773ba2d4c07f3eb0bb116fbe692011b7cc072d9ca12797cd3748198610a",
            "4x-classicalSR-DIV2K-s64w8-SwinIR-M",
        ),
    )
}
