import sys

from blazeface_tools.weights.build import main

sys.exit(main())
