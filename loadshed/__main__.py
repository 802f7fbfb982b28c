"""`python -m loadshed`."""

import sys

from loadshed.cli import main

sys.exit(main())
