"""The model layer: the op IR (``ops``, ``layers``) autocomp's own models are written in, and the
front ends that read a user's Flax model into the same layer inventory (``linen``, ``nnx``, with
the channel-group analysis ``channels`` and the graph pricing ``graph_costs``); ``zoo`` holds
ready linen models, ``inspection`` the table :func:`autocomp.inspect` prints."""
