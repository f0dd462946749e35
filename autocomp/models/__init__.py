"""The model layer: the op IR (``ops``, with the conv lowerings ``convs``, and ``layers``)
autocomp's own models are written in, and the front ends that read a user's Flax model into the
same layer inventory: ``linen`` (the channel analysis and inventory both front ends share, and
linen's simulation and materialization) and ``nnx``, with ``discovery`` (which layers a model
calls and which are compressible), the channel-group analysis (``channels`` walks the jaxpr,
``channel_rules`` holds what each primitive does to channels, ``channel_groups`` makes the
groups), ``materialized`` (the compressed model as the user gets it back) and the graph pricing
``graph_costs``; ``zoo`` holds ready linen models, ``inspection`` the table
:func:`autocomp.inspect` prints."""
