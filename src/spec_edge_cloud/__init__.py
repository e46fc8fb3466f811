"""spec_edge_cloud: edge-cloud speculative decoding with early exits for a Unitree Go2 VLM.

Layers (imports point downward only): ros -> bench -> control, sim -> transport -> decoding -> modeling.
"""

__version__ = "0.1.0"
