import sys

from glm_asr_cli.main import main

sys.exit(main())
