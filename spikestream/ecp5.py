"""Resources of the ECP5 parts that ULX3S boards carry (Lattice DS1044, table 1.1)."""

from dataclasses import dataclass

__all__ = ["ECP5Device", "ECP5_DEVICES", "ULX3S_DEVICES", "ulx3s_device"]


@dataclass(frozen=True)
class ECP5Device:
    """One ECP5 part: its name for nextpnr and what it can hold."""
    part: str          # e.g. "LFE5U-85F"
    nextpnr: str       # nextpnr-ecp5 device flag, e.g. "--85k"
    lut4: int
    dp16kd: int        # 18 Kbit block RAMs
    mult18: int        # 18x18 multipliers


ECP5_DEVICES = {
    "12f": ECP5Device("LFE5U-12F", "--12k", 12_288, 32, 28),
    "25f": ECP5Device("LFE5U-25F", "--25k", 24_288, 56, 28),
    "45f": ECP5Device("LFE5U-45F", "--45k", 43_848, 108, 72),
    "85f": ECP5Device("LFE5U-85F", "--85k", 83_640, 208, 156),
}
ULX3S_DEVICES = ECP5_DEVICES


def ulx3s_device(name):
    """The ECP5 part of a ULX3S size ("12f", "25f", "45f", "85f"); a clear error otherwise."""
    key = name.lower().removeprefix("lfe5u-").removeprefix("ulx3s-")
    if key not in ULX3S_DEVICES:
        raise ValueError(f"unknown ULX3S size {name!r}; known sizes: "
                         + ", ".join(sorted(ULX3S_DEVICES)))
    return ULX3S_DEVICES[key]
