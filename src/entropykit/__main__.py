import sys

from entropykit.cli.main import main

sys.exit(main())
