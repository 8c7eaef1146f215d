import sys

from triggerd.cli import main

sys.exit(main())
