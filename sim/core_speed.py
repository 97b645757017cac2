"""How fast the Verilated core simulates the shipped model (used by ``bench.core``).

Runs the cocotb testbench ``sim.tb_core.test_shipped_lm`` (every neuron checked against the
golden model every timestep, then a stretch without the monitor and checker) on the
shipped image preloaded through ``init``, and returns the testbench's measurements.
"""

import json
import os
import sys
from pathlib import Path

from hw.core import Core
from spikestream.memory_map import CoreConfig, image_writes, settings_writes
from models.data import DEFAULT_TEXT, split
from spikestream.board import SHIPPED_IMAGE
from spikestream.image import load_image
from spikestream.sampler import temperature_word

from .runner import available_simulators, build_and_run

__all__ = ["measure_sim_speed"]

_REPO = Path(__file__).resolve().parent.parent
_BUILD_ARGS = ["--no-public-flat-rw", "--public-depth", "1"]     # as tests/sim's core builds
_MAKE_FLAGS = "OPT_FAST=-O1 OPT_GLOBAL=-O0"


def measure_sim_speed(tokens, image_path=SHIPPED_IMAGE):
    """Run ``tokens`` checked timesteps and as many unchecked ones of the image on the
    Verilated core; returns a dict (``cycles_per_second`` is the unchecked speed, in clock
    cycles of simulated time per wall-clock second), or ``None`` without a simulator."""
    sims = available_simulators()
    if not sims:
        return None
    image = load_image(image_path)
    config = CoreConfig.for_image(image)
    scale = float(image.net.populations[image.net.readout].scale[0])
    init = {"image": str(image_path), "temperature_word": temperature_word(0.8, scale),
            "seed_word": 2024}
    text = DEFAULT_TEXT.read_text(encoding="utf-8")
    offset = text.index("\n", len(split(text)[0]) + 2000) + 1
    core = Core(config, init=image_writes(image, config) + settings_writes(
        temperature_word=init["temperature_word"], seed=init["seed_word"]), trace=True)
    half = max(1, tokens // 2)
    tb_config = {"core": vars(config), "init": init, "nets": [],
                 "lm": {"text": str(DEFAULT_TEXT), "offset": offset, "text_steps": half,
                        "greedy_steps": 1, "feedback_steps": max(1, tokens - half),
                        "reseed": 7, "unchecked_steps": tokens}}
    root = Path(os.environ.get("SPIKESTREAM_SIM_BUILD") or _REPO / "sim_build")
    env = {"MAKEFLAGS": f"{os.environ.get('MAKEFLAGS', '')} {_MAKE_FLAGS}".strip(),
           "OBJCACHE": f"{sys.executable} {_REPO / 'sim' / 'core_objcache.py'}",
           "CORE_OBJCACHE_DIR": str(root.resolve() / ".objcache")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        results = build_and_run(core, "core", "sim.tb_core", sim=sims[0],
                                testcase=["test_shipped_lm"], config=tb_config,
                                extra_build_args=_BUILD_ARGS if sims[0] == "verilator" else ())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    stats = json.loads((results.parent / "lm_stats.json").read_text())
    return {"simulator": sims[0], "lanes": image.lanes, "tokens": tokens,
            "cycles": int(stats["unchecked_clocks"]), "seconds": stats["unchecked_s"],
            "cycles_per_second": stats["unchecked_clocks_per_s"],
            "checked_cycles_per_second": stats["clocks_per_s"]}
