"""The names of the keyframe selection methods (tspo_edge.selection implements them), in a module
without NumPy: the light client of a server (tspo_edge.serving.client) checks a method before it asks."""

METHODS = ("topk", "bin-max", "aks", "uniform")
