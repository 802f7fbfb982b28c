"""loadshed: shed load when a Powerwall house goes off-grid, bring it back when the grid returns."""

__version__ = "0.1.0"
