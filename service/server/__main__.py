"""`python -m jitnet.service.server`: a server from the command line, as `jitnet serve`."""

import sys

from .main import main

sys.exit(main())
