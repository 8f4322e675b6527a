"""Video decoding backends behind one interface, and the writer; tspo_edge.media.video is their face.

    base.py      VideoInfo, FrameChunk, the Decoder protocol, output geometry, the sampling plan
    pyav.py      PyAV (the default)        decord.py   decord / decord2
    nvdec.py     NVIDIA GPU decoding       registry.py name -> decoder, availability, fallback
    writer.py    write_video (PyAV)
"""
