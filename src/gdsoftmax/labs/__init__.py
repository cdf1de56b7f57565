"""Theory labs, one command each: ``gdsoftmax theory`` (the gradient-analysis table), ``gdsoftmax
lab peeled`` (the layer-peeled model) and ``gdsoftmax lab margin`` (normalized margins). They sit
on top of the engine and the analysis layer; nothing below imports them.
"""
