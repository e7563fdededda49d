import sys

from rtbserve.cli import main

sys.exit(main())
