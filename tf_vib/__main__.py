import sys

from tf_vib.cli import main

sys.exit(main())
