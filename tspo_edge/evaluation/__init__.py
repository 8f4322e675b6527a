"""Evaluation: the generated needle-in-a-haystack benchmark and the paper's evaluation formats.

- `sources`   the needle library (real photos and clips, each with its question) and haystack clips
- `needle`    reproducible long-video generation with planted needles (manifest JSON)
- `metrics`   hit fraction, needle recall, accuracy, aggregation
- `runner`    `tspo-edge eval needle`: index, score, select per method, answer, aggregate
- `report`    table, JSON and PNG plot of a needle run
- `formats`   LongVideoBench / Video-MME / MLVU / LVBench annotations (JSON and TSV) and frame_idx JSON
- `frames`    `tspo-edge eval frames`: keyframes for every question, written as frame_idx
"""
