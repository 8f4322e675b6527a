"""The sane bounds of every number a user can give (one table, read by the command line's checks,
the library's and the docs).

Each bound keeps a value inside what the machinery can hold (SQLite's 64-bit integers, a seed
NumPy and torch both take, a timeout threading can wait) and inside a memory budget (a frame
count that a video could really have, keyframes an answerer can take). A value outside is refused
before any file is touched.
"""

from __future__ import annotations

MIN_FPS = 0.001                 # one frame every ~17 minutes; use a frame limit for fewer
MAX_FPS = 1000.0                # above a video's own rate every frame is sampled anyway
MAX_VIDEO_FRAMES = 1_000_000    # frames sampled from one video (11.5 days at 1 fps)
MAX_ASK_FRAMES = 256            # keyframes one question may ask for (the server's bound too)
MAX_OPTIONS = 8                 # answer options, A to H (tspo_edge.questions.LETTERS)
MAX_QUESTION_CHARS = 4000       # a question with its options, as typed or in a batch line
MAX_TOP = 1000                  # moments a search lists
MAX_SECONDS = 86_400.0          # timeouts, settle times, search spacing: at most a day
MAX_WORKERS = 512               # decoding processes, request threads
MAX_TOKENS = 65_536             # answer length
MAX_SEED = 2**32 - 1            # NumPy's and torch's seeds both hold it
MAX_STEPS = 10**9               # optimizer steps, checkpoint interval
MAX_EPOCHS = 100_000.0
MAX_GROUP = 1024                # rollouts per sample
MAX_LR = 10.0
MAX_GRAD_ACCUM = 65_536
MAX_OPSET = 30
MAX_BENCH_VIDEOS = 10_000       # generated benchmark videos, needles per video
MIN_BENCH_MINUTES, MAX_BENCH_MINUTES = 0.1, 24 * 60.0
MAX_BENCH_FPS = 60
