import sys

from svcjax.cli import main

sys.exit(main())
