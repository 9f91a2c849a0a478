"""The boards shiftnpu builds for, and what their FPGAs hold.

Pure Python (no Amaranth import), so the resource estimator and the CLI can read the table cheaply.
A board is named by its short name (``icebreaker``, ``ulx3s-85f``, ``orangecrab-85f``, ...) or by
the class name of any `amaranth-boards` platform with an iCE40 or ECP5 FPGA
(``ICEBreakerPlatform``, ``ULX3S_45F_Platform``, ...); :func:`get_board` resolves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quant.config import NPUConfig

__all__ = ["Device", "Board", "DEVICES", "BOARDS", "get_board", "board_names"]


@dataclass(frozen=True)
class Device:
    """Resources of one FPGA, as nextpnr counts them.

    ``logic`` is iCE40 logic cells (ICESTORM_LC: LUT4 + carry + FF) or ECP5 LUT4s
    (TRELLIS_COMB); ``bram`` is EBR blocks (SB_RAM40_4K, 4 kbit) or DP16KD (18 kbit);
    ``spram`` the UP5K's 256-kbit single-port RAMs; ``dsp`` SB_MAC16 or MULT18X18D.
    """

    name: str
    family: str  # "ice40" or "ecp5"
    logic: int
    ffs: int
    bram: int
    bram_bits: int
    spram: int
    dsp: int
    plls: int
    logic_key: str
    resource_keys: dict[str, str] = field(default_factory=dict)  # our name -> nextpnr cell type


_ICE40_KEYS = {"logic": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM", "dsp": "ICESTORM_DSP"}
_ECP5_KEYS = {"logic": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D"}


def _ecp5(name: str, luts: int, bram: int, dsp: int) -> Device:
    return Device(
        name, "ecp5", luts, luts, bram, 18 * 1024, 0, dsp, 4 if luts > 30000 else 2, "TRELLIS_COMB", _ECP5_KEYS
    )


DEVICES: dict[str, Device] = {
    "iCE40UP5K": Device("iCE40UP5K", "ice40", 5280, 5280, 30, 4096, 4, 8, 1, "ICESTORM_LC", _ICE40_KEYS),
    "iCE40HX8K": Device("iCE40HX8K", "ice40", 7680, 7680, 32, 4096, 0, 0, 2, "ICESTORM_LC", _ICE40_KEYS),
    "iCE40HX1K": Device("iCE40HX1K", "ice40", 1280, 1280, 16, 4096, 0, 0, 1, "ICESTORM_LC", _ICE40_KEYS),
    "LFE5U-12F": _ecp5("LFE5U-12F", 12096, 32, 28),
    "LFE5U-25F": _ecp5("LFE5U-25F", 24288, 56, 28),
    "LFE5U-45F": _ecp5("LFE5U-45F", 43848, 108, 72),
    "LFE5U-85F": _ecp5("LFE5U-85F", 83640, 208, 156),
    "LFE5UM5G-85F": _ecp5("LFE5UM5G-85F", 83640, 208, 156),
}


@dataclass(frozen=True)
class Board:
    """One board: its platform class, oscillator, serial pins, LEDs and programmer.

    ``uart`` is ``None`` when the platform has a ``uart`` resource (the board's USB-serial bridge);
    otherwise ``(connector, rx pin, tx pin)`` of header pins where a USB-serial adapter goes.
    ``defaults`` are the :class:`~quant.config.NPUConfig` fields of the board's default config
    (:meth:`default_config`: what ``shiftnpu build`` and ``shiftnpu estimate`` use when no
    ``--rows``/``--cols``/... are given); the other fields keep NPUConfig's defaults.
    """

    name: str
    module: str
    cls: str
    device: str
    clk: str
    clk_mhz: float
    default_mhz: float
    leds: tuple[str, ...]
    programmer: str  # "iceprog", "openFPGALoader" or "dfu-util"
    uart: tuple[str, str, str] | None = None
    note: str = ""
    defaults: tuple[tuple[str, int], ...] = (("rows", 8), ("cols", 8))

    @property
    def family(self) -> str:
        return DEVICES[self.device].family

    @property
    def resources(self) -> Device:
        return DEVICES[self.device]

    def default_config(self, **over: int) -> NPUConfig:
        """The board's default config (:attr:`defaults` over NPUConfig's), with ``over`` replacing fields
        (``None`` values are ignored, so parsed command-line options can be passed as they are)."""
        fields = dict(self.defaults)
        fields.update({k: v for k, v in over.items() if v is not None})
        return NPUConfig(**fields)

    def describe_default(self) -> str:
        """One line naming the default config's array and the fields it changes, e.g. ``16x16``."""
        d = dict(self.defaults)
        cfg = self.default_config()
        rest = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("rows", "cols"))
        return f"{cfg.rows}x{cfg.cols}" + (f" ({rest})" if rest else "")


#: Default configs (issue #9's targets). The UP5K: the largest array whose whole NPU (gate unit and
#: UART included) fits its 5280 logic cells is 4x4 (an 8x8 one needs about 7700), with memories for
#: a hidden-32 LSTM (256 channels, 2048 weight rows: its SPRAMs hold the weights and biases) and small
#: feature and program memories for its 30 EBRs. An ECP5 of 45k LUTs or more: a 16x16 array with
#: NPUConfig's default memories.
_UP5K_DEFAULTS = (
    ("rows", 4),
    ("cols", 4),
    ("act_depth", 256),
    ("weight_depth", 2048),
    ("chan_depth", 256),
    ("m_block", 32),
    ("prog_depth", 128),
)
_BIG_ECP5_DEFAULTS = (("rows", 16), ("cols", 16))

BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        "icebreaker",
        "amaranth_boards.icebreaker",
        "ICEBreakerPlatform",
        "iCE40UP5K",
        "clk12",
        12.0,
        40.0,
        ("led_g", "led_r"),
        "iceprog",
        defaults=_UP5K_DEFAULTS,
    ),
    "ulx3s-85f": Board(
        "ulx3s-85f",
        "amaranth_boards.ulx3s",
        "ULX3S_85F_Platform",
        "LFE5U-85F",
        "clk25",
        25.0,
        100.0,
        ("led",),
        "openFPGALoader",
        defaults=_BIG_ECP5_DEFAULTS,
    ),
    "ulx3s-45f": Board(
        "ulx3s-45f",
        "amaranth_boards.ulx3s",
        "ULX3S_45F_Platform",
        "LFE5U-45F",
        "clk25",
        25.0,
        100.0,
        ("led",),
        "openFPGALoader",
        defaults=_BIG_ECP5_DEFAULTS,
    ),
    "ulx3s-25f": Board(
        "ulx3s-25f",
        "amaranth_boards.ulx3s",
        "ULX3S_25F_Platform",
        "LFE5U-25F",
        "clk25",
        25.0,
        100.0,
        ("led",),
        "openFPGALoader",
    ),
    "orangecrab-85f": Board(
        "orangecrab-85f",
        "amaranth_boards.orangecrab_r0_2",
        "OrangeCrabR0_2_85FPlatform",
        "LFE5U-85F",
        "clk",
        48.0,
        100.0,
        ("rgb_led",),
        "dfu-util",
        uart=("io", "0", "1"),
        note="no USB-serial bridge on the board: the UART is on Feather pins 0 (RX) and 1 (TX)",
        defaults=_BIG_ECP5_DEFAULTS,
    ),
    "orangecrab-25f": Board(
        "orangecrab-25f",
        "amaranth_boards.orangecrab_r0_2",
        "OrangeCrabR0_2_25FPlatform",
        "LFE5U-25F",
        "clk",
        48.0,
        100.0,
        ("rgb_led",),
        "dfu-util",
        uart=("io", "0", "1"),
        note="no USB-serial bridge on the board: the UART is on Feather pins 0 (RX) and 1 (TX)",
    ),
}


def board_names() -> list[str]:
    return list(BOARDS)


def _board_from_platform_class(name: str) -> Board:
    """A :class:`Board` for any amaranth-boards platform class with an iCE40 or ECP5 FPGA."""
    import importlib
    import pkgutil

    import amaranth_boards

    for info in pkgutil.iter_modules(amaranth_boards.__path__):
        if info.name.startswith("_") or info.name in ("resources", "extensions"):
            continue
        try:
            mod = importlib.import_module(f"amaranth_boards.{info.name}")
        except Exception:  # noqa: BLE001 - a platform module with missing optional deps is not ours
            continue
        cls = getattr(mod, name, None)
        if cls is None or not isinstance(cls, type):
            continue
        device = getattr(cls, "device", None)
        if device not in DEVICES:
            raise ValueError(f"platform {name} has device {device!r}; shiftnpu builds for {', '.join(sorted(DEVICES))}")
        clk = cls.default_clk
        res = {(r.name, r.number): r for r in cls.resources}
        clock = res[(clk, 0)].clock
        names = {r.name for r in cls.resources}
        if "uart" not in names:
            raise ValueError(
                f"platform {name} has no 'uart' resource; add the board to hw/boards.py with its UART pins"
            )
        leds = tuple(n for n in ("led", "led_g", "rgb_led") if n in names)[:1]
        dev = DEVICES[device]
        fam = dev.family
        defaults = (("rows", 8), ("cols", 8))
        if dev.spram:
            defaults = _UP5K_DEFAULTS
        elif fam == "ecp5" and dev.logic >= 40000:
            defaults = _BIG_ECP5_DEFAULTS
        return Board(
            name,
            mod.__name__,
            name,
            device,
            clk,
            clock.frequency / 1e6,
            40.0 if fam == "ice40" else 100.0,
            leds,
            "iceprog" if fam == "ice40" else "openFPGALoader",
            defaults=defaults,
        )
    raise ValueError(
        f"unknown board {name!r}{_did_you_mean(name)}; choose one of {', '.join(BOARDS)} or an amaranth-boards platform class name"
    )


def _did_you_mean(name: str) -> str:
    """`` (did you mean 'icebreaker'?)`` for a near miss of a short board name or platform class."""
    import difflib

    low = name.lower()
    known = list(BOARDS) + [b.cls for b in BOARDS.values() if b.cls]
    close = [k for k in known if k.lower().startswith(low)] if len(low) >= 3 else []
    close += [k for k in difflib.get_close_matches(low, [k.lower() for k in known], n=3, cutoff=0.6)]
    close = [next(k for k in known if k.lower() == c.lower()) for c in dict.fromkeys(c.lower() for c in close)]
    return f" (did you mean {' or '.join(repr(c) for c in close[:3])}?)" if close else ""


def get_board(name: str) -> Board:
    """The board called ``name`` (short name or amaranth-boards platform class name)."""
    if name in BOARDS:
        return BOARDS[name]
    if name.lower() in BOARDS:  # ICEBreaker, ULX3S-85F
        return BOARDS[name.lower()]
    for b in BOARDS.values():
        if b.cls == name:
            return b
    return _board_from_platform_class(name)
