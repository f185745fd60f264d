import sys

from cooptim.cli.train import main

sys.exit(main())
