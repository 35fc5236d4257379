"""Watch the screen until a build finishes; the model is asked only when the screen has changed.

AGENTCPM_BASE_URL=http://localhost:8000/v1 python examples/watch_build.py [SECONDS_BETWEEN_LOOKS]
"""

import sys
import time

from agentcpm.screen import watch

question = "Has the build or test run on screen finished? Answer yes or no, then say in one line how it went."
every = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
for answer in watch(question, every=every, until=lambda text: text.lower().startswith("yes"), timeout=3600):
    print(time.strftime("%H:%M:%S", time.localtime(answer.taken_at)), answer.text, flush=True)
