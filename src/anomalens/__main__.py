import sys

from anomalens.cli import main

sys.exit(main())
