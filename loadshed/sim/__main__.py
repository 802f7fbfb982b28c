"""`python -m loadshed.sim`: run a simulated house in the foreground and print its config.

Keys typed on stdin (then Enter): `g` cuts or restores the grid, `q` quits. Ctrl-C quits too.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from loadshed.sim.house import SimHouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadshed.sim", description=__doc__)
    parser.add_argument("--speed", type=float, default=1.0, help="sim clock speed (1)")
    parser.add_argument("--write-config", type=Path, help="also write the config to this file")
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be above 0")
    with SimHouse(speed=args.speed) as house:
        if args.write_config:
            house.write_config(args.write_config)
            print(f"# written to {args.write_config}", flush=True)
        print(house.config_text(), flush=True)
        print(f"# {house.summary()}", flush=True)
        print(
            "# type g + Enter to cut or restore the grid, q + Enter (or Ctrl-C) to stop", flush=True
        )
        try:
            for line in sys.stdin:
                command = line.strip().lower()
                if command == "q":
                    return 0
                if command == "g":
                    if house.energy.grid_up:
                        house.cut_grid()
                    else:
                        house.restore_grid()
                    print(f"# grid: {house.site.grid_status}", flush=True)
            threading.Event().wait()  # stdin closed (run in the background): until a signal
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
