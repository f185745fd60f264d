"""FPGA device database: resources, default clock and off-chip bandwidth of the boards the papers use.

BRAM is counted in 18 Kb blocks (one BRAM36 = two BRAM18), as fpgaConvNet does. Users add their own
boards from YAML with `load_devices`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping


class DeviceError(ValueError):
    """An unknown device, or a device description that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Device:
    """One FPGA board.

    Attributes:
      name: short name used in configs (``zcu102``).
      part: the FPGA part number.
      dsp: DSP slices. bram18: 18 Kb block RAMs. uram: 288 Kb UltraRAMs (0 if none).
      lut, ff: CLB look-up tables and flip-flops.
      clock_mhz: the default clock of accelerator designs on this board.
      bandwidth_gbps: off-chip memory bandwidth available to the accelerator, in Gbit/s.
      source: where the figures come from.
      reconfiguration_s: seconds to load another bitstream, between the partitions of a design
        (`dse.partition`); fpgaconvnet-optimiser's example platforms give 0.08255 s for every
        board, and so does the default.
    """

    name: str
    part: str
    dsp: int
    bram18: int
    uram: int
    lut: int
    ff: int
    clock_mhz: float
    bandwidth_gbps: float
    source: str = "user"
    reconfiguration_s: float = 0.08255

    def __post_init__(self):
        for field in ("dsp", "bram18", "uram", "lut", "ff", "clock_mhz", "bandwidth_gbps", "reconfiguration_s"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise DeviceError(f"device {self.name!r}: {field} must be a number >= 0, got {value!r}")
        if self.clock_mhz <= 0 or self.dsp <= 0:
            raise DeviceError(f"device {self.name!r}: clock_mhz and dsp must be > 0")

    @property
    def bram36(self) -> int:
        return self.bram18 // 2

    def with_clock(self, clock_mhz: float | None) -> "Device":
        return self if clock_mhz is None else dataclasses.replace(self, clock_mhz=float(clock_mhz))


_FPGACONVNET = "fpgaconvnet-optimiser examples/platforms (board DSP/BRAM18/URAM/LUT/FF, clock, DRAM)"

DEVICES: dict[str, Device] = {
    d.name: d
    for d in [
        Device("u250", "xcu250-figd2104-2L-e", 12288, 5376, 1280, 1_728_000, 3_456_000, 250, 614.4, _FPGACONVNET),
        Device("u200", "xcu200-fsgd2104-2-e", 6840, 4320, 960, 1_182_000, 2_364_000, 250, 614.4, _FPGACONVNET),
        Device("vcu1525", "xcvu9p-fsgd2104-2L-e", 6840, 4320, 960, 1_182_240, 2_364_480, 200, 320.0, _FPGACONVNET),
        Device("zcu102", "xczu9eg-ffvb1156-2-e", 2520, 1824, 0, 274_080, 548_160, 200, 153.6, _FPGACONVNET),
        Device("zcu104", "xczu7ev-ffvc1156-2-e", 1728, 624, 96, 230_400, 460_800, 200, 153.6, _FPGACONVNET),
        Device("zc706", "xc7z045ffg900-2", 900, 1090, 0, 218_600, 437_200, 200, 102.4, _FPGACONVNET),
        # Not in fpgaConvNet's list. Resources: Xilinx DS890 (UltraScale product table), XCVU440:
        # 2,880 DSP, 2,520 BRAM36, 2,532,960 LUT, 5,065,920 FF. Clock and bandwidth are assumptions
        # (200 MHz; two 64-bit DDR4-2400 channels = 307.2 Gbit/s), to be overridden by the user.
        Device("vu440", "xcvu440-flga2892-2-e", 2880, 5040, 0, 2_532_960, 5_065_920, 200, 307.2,
               "Xilinx DS890 resources; clock and DRAM bandwidth assumed"),
    ]
}


def get_device(name: str, extra: Mapping[str, Device] | None = None) -> Device:
    """The device called `name` from the database (or from `extra`, user devices, first)."""
    table = {**DEVICES, **(extra or {})}
    try:
        return table[name]
    except KeyError:
        raise DeviceError(f"unknown device {name!r}; known devices: {', '.join(sorted(table))}") from None


_FIELDS = {f.name for f in dataclasses.fields(Device)} - {"name"}
_REQUIRED = _FIELDS - {"source", "uram", "part", "reconfiguration_s"}


def load_devices(path: str | Path) -> dict[str, Device]:
    """Reads user devices from YAML: a mapping of name -> {dsp, bram18, lut, ff, clock_mhz,
    bandwidth_gbps, [uram], [part], [source], [reconfiguration_s]}."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DeviceError(f"{path}: cannot read devices: {e}") from None
    if not isinstance(raw, dict):
        raise DeviceError(f"{path}: expected a mapping of device name -> resources")
    devices = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise DeviceError(f"{path}: device {name!r}: expected a mapping of resources")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise DeviceError(f"{path}: device {name!r}: unknown key(s) {', '.join(sorted(unknown))}")
        missing = _REQUIRED - set(spec)
        if missing:
            raise DeviceError(f"{path}: device {name!r}: missing key(s) {', '.join(sorted(missing))}")
        try:
            devices[name] = Device(name=name, **{"part": "", "uram": 0, "source": str(path), **spec})
        except DeviceError as e:
            raise DeviceError(f"{path}: {e}") from None
    return devices
